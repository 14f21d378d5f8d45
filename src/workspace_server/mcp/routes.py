"""`POST /workspaces/:id/mcp` (JSON-RPC) and `GET /workspaces/:id/mcp/stream` (SSE), spec 04 §5.

Both sit behind WorkspaceAuth and then the MCP limiter (spec 03 §4): a fixed window of MCP_RATE_LIMIT
(default 120) calls per minute per bearer token, keyed by the token's SHA-256 so no token is kept in
memory; not bypassed in dev mode.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.auth.ratelimit import Decision, FixedWindowLimiter
from workspace_server.common.errors import ApiError
from workspace_server.common.http import read_body
from workspace_server.common.ids import uuid_or_raw
from workspace_server.context import AppContext, get_ctx
from workspace_server.events.sse import SSE_HEADERS
from workspace_server.mcp import server
from workspace_server.openapi import body_schema, obj

# the JSON-RPC 2.0 request the MCP bridge answers (mcp/server.py); errors are JSON-RPC error objects
MCP_REQUEST = obj(
    "jsonrpc",
    "method",
    jsonrpc={"type": "string", "enum": ["2.0"]},
    id={"type": ["string", "integer", "null"]},
    method={
        "type": "string",
        "enum": ["initialize", "notifications/initialized", "tools/list", "tools/call"],
    },
    params={"type": "object"},
)
MCP_ERROR = {
    "type": "object",
    "description": "A JSON-RPC 2.0 error response",
    "required": ["jsonrpc", "error"],
    "properties": {
        "jsonrpc": {"type": "string"},
        "id": {},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        },
    },
}

router = APIRouter()

WINDOW_SECONDS = 60.0  # the window of the app's `ctx.mcp_limiter` (built in app.py)
PING_SECONDS = 30.0
MAX_REQUEST_BYTES = 1 << 20


def _limiter(ctx: AppContext) -> FixedWindowLimiter:
    return ctx.mcp_limiter


def _raw_bearer(request: Request) -> str:
    """The limiter's reading of Authorization: prefix `bearer ` in any case, the rest untrimmed."""
    header = request.headers.get("authorization", "")
    return header[7:] if header[:7].lower() == "bearer " else ""


async def mcp_limit(
    request: Request, _: WorkspaceAuth, ctx: Annotated[AppContext, Depends(get_ctx)]
) -> Decision:
    token = _raw_bearer(request)
    if not token:
        raise ApiError(401, "missing bearer token")
    decision = _limiter(ctx).hit(hashlib.sha256(token.encode()).hexdigest())
    if not decision.allowed:
        raise ApiError(
            429, "MCP rate limit exceeded", headers=decision.headers(), retry_after=decision.retry_after
        )
    return decision


McpLimit = Annotated[Decision, Depends(mcp_limit)]


@router.post(
    "/workspaces/{id}/mcp",
    openapi_extra=body_schema(
        MCP_REQUEST,
        max_bytes=MAX_REQUEST_BYTES,
        description="Tool errors are answered 200 with a JSON-RPC `error` member.",
    )
    | {
        "responses": {
            "400": {
                "description": "Not a JSON-RPC request: a JSON-RPC parse error",
                "content": {"application/json": {"schema": MCP_ERROR}},
            }
        }
    },
)
async def mcp_call(id: str, request: Request, limit: McpLimit, ctx: Ctx) -> JSONResponse:
    raw = await read_body(request, MAX_REQUEST_BYTES)
    reply = await server.handle(ctx, uuid_or_raw(id), raw)
    return JSONResponse(reply.body, status_code=reply.status, headers=limit.headers())


async def _stream(ws_id: str) -> AsyncIterator[bytes]:
    yield f"event: endpoint\ndata: /workspaces/{ws_id}/mcp\n\n".encode()
    while True:
        await asyncio.sleep(PING_SECONDS)
        yield b": ping\n\n"


@router.get("/workspaces/{id}/mcp/stream")
async def mcp_stream(id: str, limit: McpLimit) -> EventSourceResponse:
    return EventSourceResponse(_stream(id), headers={**SSE_HEADERS, **limit.headers()}, ping=0, sep="\n")
