"""The MCP bridge for agents (spec 04 §5): JSON-RPC over `POST /workspaces/:id/mcp` plus an SSE stream."""
