"""The terminal's rules (spec 02 §7): who may open a shell, and the byte pump between socket and pty.

Handshake checks, in the reference's order (each an HTTP response instead of the upgrade):
1. WorkspaceAuth (the same dependency the HTTP routes use);
2. an `X-Workspace-ID` naming another workspace: the bearer must be that workspace's token (an org
   token is exempt) → else 401 `invalid token for claimed workspace`; then CanCommunicate → else 403;
3. no backend → 503 `Docker not available`; no running instance → 404 `container not running`;
4. the Origin rule (empty, `http(s)://localhost:*`, or an exact CORS_ORIGINS entry) → else 403.

Frames: shell output goes out as binary frames of at most 4096 bytes; every inbound frame is written
raw to the shell's stdin, except a text frame that is exactly a JSON object
`{"type":"resize","cols":N,"rows":M}`, which resizes the pty (our extension; the reference has no
control messages). EOF of the shell closes the socket with 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from workspace_server import authz
from workspace_server.authz import Actor as AuthInfo
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonnum import loads_strict
from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.provisioner.base import BackendError, ExecSession
from workspace_server.registry.access import can_communicate

log = logging.getLogger(__name__)

SHELLS = ("/bin/bash", "/bin/sh")
FRAME_BYTES = 4096
IDLE_TIMEOUT_SECONDS = 30 * 60.0  # the reference's read deadline, reset by every inbound message
MAX_TERMINAL_DIM = 10_000
SHELL_ERROR = "Error: failed to create shell session\r\n"


def origin_allowed(settings: Settings, origin: str) -> bool:
    """Spec 02 §7: empty, any `http(s)://localhost:<port>`, or an exact trimmed CORS_ORIGINS entry."""
    if not origin or origin.startswith(("http://localhost:", "https://localhost:")):
        return True
    return origin in {o.strip() for o in settings.CORS_ORIGINS.split(",") if o.strip()}


async def check_claimed_caller(ctx: AppContext, websocket: WebSocket, target: str, auth: AuthInfo) -> None:
    """The KI-005 guard: a caller claiming another workspace must hold its token and be allowed to talk
    to the target. No header (the canvas) or the target's own id skips it; no bearer (canvas/dev mode
    passed WorkspaceAuth) skips only the token part."""
    claimed = websocket.headers.get("x-workspace-id", "")
    if not claimed or claimed == target:
        return
    caller = parse_uuid(claimed)
    await authz.claimed_caller(ctx, authz.Credentials.from_headers(websocket.headers), auth, caller)
    if caller is None or not await can_communicate(ctx.engine, caller, target):
        raise ApiError(403, "not authorized to access this workspace's terminal")


def parse_resize(text: str) -> tuple[int, int] | None:
    """(rows, cols) when `text` is exactly a resize message, else None (the text is keystrokes)."""
    if not text.startswith("{") or '"resize"' not in text:
        return None
    try:
        msg: Any = loads_strict(text)  # a deeply nested "resize" is keystrokes, not a crashed session
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("type") != "resize" or set(msg) != {"type", "cols", "rows"}:
        return None
    rows, cols = msg["rows"], msg["cols"]
    for n in (rows, cols):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_TERMINAL_DIM:
            return None
    return rows, cols


async def open_shell(backend: Any, ws_id: str) -> ExecSession:
    """`/bin/bash`, else `/bin/sh`, on a pty. A docker exec of a missing binary only fails once started,
    so the shell is probed first with `test -x` (argv, no shell)."""
    for shell in SHELLS:
        try:
            probe = await backend.exec(ws_id, ["test", "-x", shell])
        except BackendError:
            probe = None
        if probe is not None and probe.exit_code != 0 and shell != SHELLS[-1]:
            continue
        session: ExecSession = await backend.open_session(ws_id, [shell])
        return session
    raise BackendError("failed to create shell session")  # unreachable: the last shell is always tried


async def pump_output(websocket: WebSocket, session: ExecSession) -> None:
    """Shell → socket as binary frames; at EOF a 1000 close."""
    while chunk := await session.read(FRAME_BYTES):
        await websocket.send_bytes(chunk)
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=1000)


async def pump_input(websocket: WebSocket, session: ExecSession) -> None:
    """Socket → shell stdin, raw; resize messages resize the pty; 30 idle minutes end the session."""
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), IDLE_TIMEOUT_SECONDS)
        except TimeoutError:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1000)
            return
        if message["type"] == "websocket.disconnect":
            return
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            size = parse_resize(text)
            if size is not None:
                await session.resize(*size)
                continue
            data = text.encode()
        if data:
            await session.write(data)


async def bridge(websocket: WebSocket, session: ExecSession) -> None:
    """Run both pumps until either side ends, then close the session (which ends the shell)."""
    # unsupervised: the session's two directions, awaited and cancelled here before this call returns
    tasks = [
        asyncio.create_task(pump_output(websocket, session)),  # unsupervised: as above
        asyncio.create_task(pump_input(websocket, session)),  # unsupervised: as above
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect | BackendError | OSError):
                log.error("terminal pump failed", exc_info=exc)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
