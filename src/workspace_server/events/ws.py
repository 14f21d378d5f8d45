"""`GET /ws`: the WebSocket event stream for the canvas and for agents (spec 04 §3).

- Origin must be one of CORS_ORIGINS when that variable is set (any origin when unset).
- No `X-Workspace-ID`: a canvas client, unauthenticated, receives every event.
- With it: the grandfather rule (a workspace with live tokens must present one of them), then only
  events of workspaces it may communicate with (registry.access.can_communicate; its own included).
Denials are plain HTTP responses before the upgrade, as the reference (gin aborts before upgrading).
Inbound frames are read and ignored; no subscribe protocol, no pings, no replay.
"""

from __future__ import annotations

import asyncio
import logging

from cachetools import TTLCache
from fastapi import WebSocket
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server import authz
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.events.bus import Event, encode
from workspace_server.events.hub import Hub, HubClient
from workspace_server.registry.access import can_communicate

log = logging.getLogger(__name__)

# A burst of events for one workspace costs one hierarchy lookup per client, not one per event.
# Re-parenting shows up within this window.
ACCESS_CACHE_TTL = 5.0
ACCESS_CACHE_SIZE = 4096


class HierarchyFilter:
    """Per-client "may this agent see events of workspace X?", cached for a few seconds."""

    def __init__(self, engine: AsyncEngine, workspace_id: str, ttl: float = ACCESS_CACHE_TTL) -> None:
        self._engine = engine
        self._me = workspace_id
        self._cache: TTLCache[str, bool] = TTLCache(ACCESS_CACHE_SIZE, ttl)

    async def __call__(self, event: Event) -> bool:
        target = event.workspace_id
        if not target:  # events about no workspace are for the canvas only
            return False
        if target == self._me:
            return True
        cached = self._cache.get(target)
        if cached is not None:
            return cached
        try:
            allowed = await can_communicate(self._engine, self._me, target)
        except Exception:  # lookup failure denies, as the reference's CanCommunicate
            log.exception("hierarchy check failed for %s -> %s", self._me, target)
            allowed = False
        self._cache[target] = allowed
        return allowed


async def _allow_all(_: Event) -> bool:
    return True


def origin_allowed(settings: Settings, origin: str) -> bool:
    if not settings.CORS_ORIGINS.strip():
        return True
    return origin.lower() in settings.cors_origins


async def authorize(ctx: AppContext, websocket: WebSocket) -> str | None:
    """The agent's workspace id (None for a canvas client), or ApiError to deny the handshake."""
    raw = websocket.headers.get("x-workspace-id", "")
    ws_id: str | None = None
    if raw:
        # DECIDE: the reference passes a non-UUID id to Postgres and answers 500; we answer 400.
        ws_id = parse_uuid(raw)
        if ws_id is None:
            raise ApiError(400, "invalid workspace ID")
        await _check_agent_token(ctx, websocket, ws_id)
    if not origin_allowed(ctx.settings, websocket.headers.get("origin", "")):
        raise ApiError(403, "origin not allowed")
    return ws_id


async def _check_agent_token(ctx: AppContext, websocket: WebSocket, ws_id: str) -> None:
    # the grandfather rule; a tokenless workspace passes only in the open bootstrap mode (issue 11 §1)
    await authz.token_holder(
        ctx, authz.Credentials.from_headers(websocket.headers), ws_id, tokenless="open_bootstrap"
    )


async def deny(websocket: WebSocket, err: ApiError) -> None:
    """An HTTP response instead of the upgrade; a close frame where the server cannot send one."""
    response = JSONResponse(err.body, status_code=err.status, headers=err.headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # no websocket.http.response extension
        await websocket.close(code=1008, reason=str(err.body.get("error", ""))[:120])


async def _discard_inbound(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def serve_client(websocket: WebSocket, hub: Hub, client: HubClient, engine: AsyncEngine) -> None:
    """Run until the peer disconnects or a send fails; either way the client ends cleanly."""
    allowed = _allow_all if client.workspace_id is None else HierarchyFilter(engine, client.workspace_id)

    async def send(event: Event) -> None:
        await websocket.send_text(encode(event))

    # unsupervised: the connection's two directions, awaited and cancelled here before this call returns
    pump = asyncio.create_task(hub.pump(client, send, allowed))
    inbound = asyncio.create_task(_discard_inbound(websocket))  # unsupervised: as above
    try:
        await asyncio.wait({pump, inbound}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, inbound):
            task.cancel()
        results = await asyncio.gather(pump, inbound, return_exceptions=True)
    failure = next((r for r in results if isinstance(r, Exception)), None)
    if failure is not None:
        log.debug("websocket client ended: %r", failure)
        try:
            await websocket.close()
        except Exception:  # already gone: nothing left to tell the peer
            log.debug("websocket close after failure did not go through")


async def handle(websocket: WebSocket) -> None:
    ctx: AppContext = websocket.app.state.ctx
    try:
        ws_id = await authorize(ctx, websocket)
    except ApiError as err:
        await deny(websocket, err)
        return
    client = ctx.hub.register(ws_id)
    try:
        await websocket.accept()
        await serve_client(websocket, ctx.hub, client, ctx.engine)
    except Exception:  # the handshake itself failed (peer gone): nothing to report to anyone
        log.debug("websocket handshake failed", exc_info=True)
    finally:
        ctx.hub.unregister(client)
