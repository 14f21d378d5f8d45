"""Event routes (spec 04 §3): the audit trail, the WebSocket stream and the SSE streams."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import uuid_or_raw
from workspace_server.context import AppContext
from workspace_server.events import sse, store, ws
from workspace_server.openapi import describe
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

router = APIRouter()


@router.websocket("/ws")
async def websocket_events(websocket: WebSocket) -> None:
    await ws.handle(websocket)


describe(
    "GET",
    "/ws",
    {
        "tags": ["events"],
        "summary": "Event stream (WebSocket)",
        "description": "Upgrade to a WebSocket (`Connection: Upgrade`, `Upgrade: websocket`) that pushes "
        "every structure event as a JSON text message (spec 04 §3). The canvas connects with no header "
        "(open, as in the reference); an agent names itself with `X-Workspace-ID` and its bearer token, "
        "and then receives only the events it may see. Refusals happen before the upgrade, with the "
        "usual JSON error body. A plain GET (no upgrade) is not a route: 404.",
        "operationId": "websocket_events_ws_get",
        "parameters": [
            {"name": "X-Workspace-ID", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "101": {"description": "Switching Protocols: the event stream follows as WebSocket text frames"},
            "401": {"description": "A workspace caller without a valid token"},
            "403": {"description": "Origin not allowed"},
        },
    },
)


# Declared before `/events/{workspace_id}` so that route never captures "stream".
@router.get("/events/stream")
async def stream_all_events(_: AdminAuth, ctx: Ctx) -> EventSourceResponse:
    """Extension: every event, admin only, in the per-workspace stream's format."""
    return sse.event_stream(ctx.hub, None)


@router.get("/events")
async def list_events(_: AdminAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await _recent(ctx, None))


@router.get("/events/{workspace_id}")
async def list_workspace_events(workspace_id: str, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    # A malformed id matches nothing (the reference answered 500 from Postgres).
    return JSONResponse(await _recent(ctx, uuid_or_raw(workspace_id)))


async def _recent(ctx: AppContext, workspace_id: str | None) -> list[dict[str, Any]]:
    try:
        async with ctx.engine.connect() as conn:
            return await store.recent_events(conn, workspace_id)
    except Exception:
        log.exception("listing events failed")
        raise ApiError(500, "query failed") from None


@router.get("/workspaces/{id}/events/stream")
async def stream_workspace_events(id: str, _: WorkspaceAuth, ctx: Ctx) -> EventSourceResponse:
    ws_id = uuid_or_raw(id)  # a malformed id finds no workspace: 404
    try:
        async with ctx.engine.connect() as conn:
            row = await get_workspace(conn, ws_id)
    except Exception:
        log.exception("SSE workspace lookup failed for %s", ws_id)
        raise ApiError(500, "failed to verify workspace") from None
    if row is None:
        raise ApiError(404, "workspace not found")
    return sse.event_stream(ctx.hub, sse.for_workspace(ws_id))
