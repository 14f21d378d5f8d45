"""Two `workspace-server serve` processes on one Postgres + Redis: an event caused on A reaches B's sockets.

Postgres only: the SQLite default is single-process by design (in-process bus, no Redis).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import free_port
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.engine import make_engine
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
WAIT = 20  # guards against hanging, never assertions about speed
STARTUP = 60.0


class ServerProcess:
    def __init__(self, db_url: str, redis_url: str, log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "WORKSPACE_BACKEND": "none",
            "ADMIN_TOKEN": ADMIN,
            "MOLECULE_ENV": "",
            "CORS_ORIGINS": "",
            "RATE_LIMIT": "100000",
            "DATA_DIR": str(log_dir / f"data-{name}"),
            "CONFIGS_DIR": str(log_dir / "configs"),
            "HOST": "127.0.0.1",
        }
        self.log_path = log_dir / f"server-{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # fixed argv, no shell
            [sys.executable, "-m", "workspace_server", "serve", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/events", headers=ADMIN_H, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start; log:\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def two_servers(
    request: pytest.FixtureRequest, db_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    if request.node.callspec.params.get("db_url") == "sqlite":
        pytest.skip("cross-process fan-out needs Postgres + Redis; the SQLite default is single-process")
    servers = [ServerProcess(db_url, redis_url, tmp_path, name) for name in ("a", "b")]
    try:
        for s in servers:
            s.wait_ready()
        yield servers[0], servers[1]
    finally:
        for s in servers:
            s.stop()


async def _seed(db_url: str) -> tuple[str, str]:
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            ws_id = new_id()
            await insert_workspace(conn, id=ws_id, name="cross", status="online")
            token = await issue_workspace_token(conn, ws_id)
    finally:
        await engine.dispose()
    return ws_id, token


async def _frame_for(ws: ClientConnection, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Next frame `match` accepts. Other tests share this Redis channel, so unrelated frames are skipped."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if match(frame):
            return frame


async def test_event_caused_on_a_reaches_websocket_clients_of_b(
    two_servers: tuple[ServerProcess, ServerProcess], db_url: str
) -> None:
    a, b = two_servers
    ws_id, token = await _seed(db_url)
    b_ws = b.url.replace("http://", "ws://") + "/ws"
    agent_headers = {"X-Workspace-ID": ws_id, "Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=WAIT) as http_a,
        connect(b_ws) as canvas,
        connect(b_ws, additional_headers=agent_headers) as agent,
    ):
        # broadcast-only event
        r = await http_a.post(f"/workspaces/{ws_id}/notify", json={"message": "from A"}, headers=ADMIN_H)
        assert r.status_code == 200
        for sock in (canvas, agent):
            frame = await _frame_for(sock, lambda f: f["workspace_id"] == ws_id)
            assert frame["event"] == "AGENT_MESSAGE"
            assert frame["payload"] == {"message": "from A", "workspace_id": ws_id, "name": "cross"}

        # recorded event (structure_events + bus) from the registry
        r = await http_a.post(
            "/registry/register",
            json={"id": ws_id, "url": "http://localhost:9000", "agent_card": {"name": "x"}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        frame = await _frame_for(
            canvas, lambda f: f["workspace_id"] == ws_id and f["event"] == "WORKSPACE_ONLINE"
        )
        assert frame["payload"]["agent_card"] == {"name": "x"}

        # No second copy of it follows (each replica delivers what its subscriber reads, once).
        r = await http_a.post(f"/workspaces/{ws_id}/notify", json={"message": "marker"}, headers=ADMIN_H)
        assert r.status_code == 200
        frame = await _frame_for(canvas, lambda f: f["workspace_id"] == ws_id)
        assert (frame["event"], frame["payload"].get("message")) == ("AGENT_MESSAGE", "marker")

    # Exactly one copy per process: B's own trail shows the event A recorded, once.
    async with httpx.AsyncClient(base_url=b.url, timeout=WAIT) as http_b:
        r = await http_b.get(f"/events/{ws_id}", headers=ADMIN_H)
        assert [e["event_type"] for e in r.json()] == ["WORKSPACE_ONLINE"]
