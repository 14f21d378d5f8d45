"""Helpers for the terminal tests: a live server, rows in its database, and a WebSocket shell client
(collected by pytest, but holds no tests of its own)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import LiveServer
from tests.integration.provisioner_support import wait_for_reply
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.db.engine import make_engine
from workspace_server.provisioner import Backend, StartSpec
from workspace_server.workspaces.store import insert_workspace

LiveFactory = Callable[..., LiveServer]
READ_DEADLINE = 60.0  # only ends a hang; nothing is asserted about timing
B = TypeVar("B", bound=Backend)


def ws_url(srv: LiveServer, ws_id: str) -> str:
    return srv.url.replace("http://", "ws://") + f"/workspaces/{ws_id}/terminal"


@asynccontextmanager
async def tracked_backend(backend: B) -> AsyncIterator[B]:
    """`backend`, recording the workspaces `start_agent` starts on it; at exit each of them is stopped and
    its volumes removed, then the backend is closed."""
    started: list[str] = []
    backend.started = started  # type: ignore[attr-defined]
    yield backend
    for ws_id in started:
        await backend.stop(ws_id)
        await backend.remove_volumes(ws_id, workspace=True)
    await backend.close()


async def start_agent(backend: Backend, spec: StartSpec) -> None:
    """Start `spec` on a `tracked_backend` and wait until its agent answers."""
    backend.started.append(spec.workspace_id)  # type: ignore[attr-defined]
    await wait_for_reply((await backend.start(spec)).url)


def dev_server(live_server_factory: LiveFactory, backend: Backend) -> LiveServer:
    """A live server in dev mode (no bearer needed) whose app runs workspaces on `backend`."""
    srv = live_server_factory(MOLECULE_ENV="development")
    srv.app.state.ctx.backend = backend
    return srv


class Rows:
    """Workspace rows and tokens in the live server's database (through our own engine and loop)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    async def workspace(self, name: str = "Term", parent: str | None = None) -> str:
        ws_id = str(uuid.uuid4())
        engine = make_engine(self.db_url)
        try:
            async with engine.begin() as conn:
                await insert_workspace(
                    conn, id=ws_id, name=name, runtime="echo", status="online", parent_id=parent
                )
        finally:
            await engine.dispose()
        return ws_id

    async def token(self, ws_id: str) -> str:
        engine = make_engine(self.db_url)
        try:
            async with engine.begin() as conn:
                return await issue_workspace_token(conn, ws_id)
        finally:
            await engine.dispose()


async def refused(srv: LiveServer, ws_id: str, **headers: str) -> tuple[int, Any]:
    """The HTTP status and JSON body of a refused handshake."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(srv, ws_id), additional_headers=headers):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body or b"null")


async def read_until(ws: ClientConnection, needle: bytes, frames: list[bytes | str]) -> bytes:
    """Collect frames until `needle` shows up in the output; returns everything read."""
    seen = b""
    deadline = time.monotonic() + READ_DEADLINE
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} never appeared; got {seen[-500:]!r}")
        frame = await asyncio.wait_for(ws.recv(), left)
        frames.append(frame)
        seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


async def check_shell_session(srv: LiveServer, ws_id: str, **headers: str) -> None:
    """A command runs, a resize reaches the pty, output arrives in binary frames ≤ 4096, exit closes 1000."""
    frames: list[bytes | str] = []
    async with connect(ws_url(srv, ws_id), additional_headers=headers, max_size=None) as ws:
        await ws.send("echo hello-$((6*7))\n")
        await read_until(ws, b"hello-42", frames)
        await ws.send(json.dumps({"type": "resize", "cols": 101, "rows": 33}))
        await ws.send(b"stty size; echo size-$((1+1))\n")
        out = await read_until(ws, b"size-2", frames)
        assert b"33 101" in out, out[-400:]  # the tail tells a late resize from a failed stty
        assert b'"resize"' not in out  # the resize message was not typed into the shell
        await ws.send("head -c 20000 /dev/zero | tr '\\0' x; echo; echo big-$((2*3))\n")
        await read_until(ws, b"big-6", frames)
        await ws.send("exit\n")
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(await asyncio.wait_for(ws.recv(), READ_DEADLINE))
        assert ws.close_code == 1000
    assert all(isinstance(f, bytes) for f in frames)
    assert max(len(f) for f in frames) <= 4096
    assert sum(len(f) for f in frames) > 20000


async def check_handshake_rules(srv: LiveServer, rows: Rows, target: str) -> None:
    """Origin, claimed-caller token and hierarchy rules (server in dev mode: no bearer needed)."""
    status, body = await refused(srv, target, Origin="https://evil.example")
    assert status == 403
    # a token for the target used while claiming another workspace
    other_root = await rows.workspace("Other Root")
    target_token = await rows.token(target)
    status, body = await refused(
        srv, target, **{"X-Workspace-ID": other_root, "Authorization": f"Bearer {target_token}"}
    )
    assert (status, body) == (401, {"error": "invalid token for claimed workspace"})
    # a bearer that is not the target's own fails WorkspaceAuth first
    caller_token = await rows.token(other_root)
    status, body = await refused(
        srv, target, **{"X-Workspace-ID": other_root, "Authorization": f"Bearer {caller_token}"}
    )
    assert (status, body) == (401, {"error": "invalid workspace auth token"})
    # no bearer (dev mode/canvas): the hierarchy still decides; a nephew in another tree is refused
    uncle = await rows.workspace("Uncle Root")
    nephew = await rows.workspace("Nephew", parent=uncle)
    status, body = await refused(srv, target, **{"X-Workspace-ID": nephew})
    assert (status, body) == (403, {"error": "not authorized to access this workspace's terminal"})
    status, _ = await refused(srv, target, **{"X-Workspace-ID": "not-a-uuid"})
    assert status == 403
