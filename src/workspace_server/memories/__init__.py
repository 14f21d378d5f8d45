"""Scoped agent memories (`agent_memories`, spec 05 §2): REST routes, MCP helpers, secret redaction."""
