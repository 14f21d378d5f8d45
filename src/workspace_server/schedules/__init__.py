"""Cron schedules of workspaces (spec 05 §6): API, cron rules and the scheduler loop."""
