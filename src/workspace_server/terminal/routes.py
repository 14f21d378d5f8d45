"""`GET /workspaces/:id/terminal`: a WebSocket shell in the workspace (spec 02 §7; rules in service.py).

Denials are HTTP responses before the upgrade, as the reference's (gin aborts before upgrading).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, cast

from fastapi import APIRouter, Request, WebSocket
from starlette.websockets import WebSocketDisconnect

from workspace_server.auth.deps import workspace_auth
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.context import AppContext
from workspace_server.events.ws import deny
from workspace_server.openapi import describe
from workspace_server.provisioner.base import BackendError, ExecSession, InstanceNotRunning
from workspace_server.terminal import service

log = logging.getLogger(__name__)

router = APIRouter()


async def _authorize(ctx: AppContext, websocket: WebSocket, raw_id: str) -> tuple[Any, str]:
    """(backend, canonical workspace id) to open the shell on, or ApiError (every pre-upgrade check)."""
    # WorkspaceAuth reads only path params and headers, which a WebSocket has too
    auth = await workspace_auth(cast(Request, websocket), ctx)
    await service.check_claimed_caller(ctx, websocket, raw_id, auth)
    backend = ctx.backend
    if backend is None:
        raise ApiError(503, "Docker not available")
    ws_id = parse_uuid(raw_id)  # a malformed id names no instance (and never reaches an engine URL)
    if ws_id is None or not await backend.is_running(ws_id):
        raise ApiError(404, "container not running")
    if not service.origin_allowed(ctx.settings, websocket.headers.get("origin", "")):
        raise ApiError(403, "origin not allowed")
    return backend, ws_id


describe(
    "GET",
    "/workspaces/{id}/terminal",
    {
        "tags": ["terminal"],
        "summary": "Workspace shell (WebSocket)",
        "description": "Upgrade to a WebSocket carrying an interactive shell in the workspace's container: "
        "binary/text frames both ways. WorkspaceAuth, then the origin check. Needs a workspace backend "
        "(503 `Docker not available` without one); 404 when the container is not running.",
        "operationId": "terminal_workspaces__id__terminal_get",
        "security": [{"bearerAuth": []}],
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "101": {"description": "Switching Protocols: the shell session follows"},
            "401": {"description": "Missing or invalid workspace token"},
            "403": {"description": "Origin not allowed"},
            "404": {"description": "Container not running, or a plain GET (no upgrade)"},
            "503": {"description": "No workspace backend (Docker) in this deployment"},
        },
    },
)


@router.websocket("/workspaces/{id}/terminal")
async def terminal(websocket: WebSocket, id: str) -> None:
    ctx: AppContext = websocket.app.state.ctx
    try:
        backend, ws_id = await _authorize(ctx, websocket, id)
    except ApiError as err:
        await deny(websocket, err)
        return
    try:
        session: ExecSession | None = await service.open_shell(backend, ws_id)
    except InstanceNotRunning:  # stopped between the check and the exec
        await deny(websocket, ApiError(404, "container not running"))
        return
    except BackendError as exc:
        log.warning("terminal for %s: no shell session: %s", id, exc.detail or exc.message)
        session = None
    await websocket.accept()
    if session is None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.send_text(service.SHELL_ERROR)
            await websocket.close(code=1000)
        return
    await service.bridge(websocket, session)
