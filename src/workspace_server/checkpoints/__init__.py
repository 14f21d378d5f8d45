"""Workflow checkpoints (`workflow_checkpoints`, spec 05 §7): the last completed step of an agent's
durable workflows, so a restarted agent resumes where it stopped instead of from the beginning."""
