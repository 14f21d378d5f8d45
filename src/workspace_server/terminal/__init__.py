"""WebSocket terminal into a workspace (spec 02 §7)."""
