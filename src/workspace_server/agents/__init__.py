"""The agent (model) a workspace runs: assign, replace, remove, move (spec 01 §3)."""
