"""KV memory (`workspace_memory`, spec 05 §3): a per-workspace key/value store with TTLs and
optimistic concurrency (`if_match_version`), so agents sharing state do not lose each other's writes."""
