"""Helpers for the replica tests (no tests of its own): real `workspace-server serve` processes on one
Postgres + Redis, started together and waited for together so a test pays one start-up, not three.

Every replica gets the same ADMIN_TOKEN, SECRETS_ENCRYPTION_KEY and DATA_DIR (replicas on one host share
the process backend's pidfiles, as docs/operations.md says they must) and short loop timings, so a
lease hand-over or a scheduler tick happens in about a second instead of tens of seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from tests.conftest import TEST_ENCRYPTION_KEY, free_port
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.engine import make_engine
from workspace_server.db.schema import leader_leases
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
STARTUP = 90.0  # guards a hang; start-up is 3–10 s on a loaded 2-core machine
LEASE_TTL = 3.0
LEASE_RENEW = 0.5
SCHEDULER_INTERVAL = 0.5

SRC = str(Path(__file__).resolve().parents[2] / "src")


def replica_env(db_url: str, redis_url: str, data_dir: Path, port: int, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        # the spawned server imports this checkout's code, whatever is installed in the venv
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "WORKSPACE_BACKEND": "none",
        "ADMIN_TOKEN": ADMIN,
        "MOLECULE_ENV": "",
        "SECRETS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "CORS_ORIGINS": "",
        "RATE_LIMIT": "100000",
        "DATA_DIR": str(data_dir),
        "CONFIGS_DIR": str(data_dir.parent / "configs"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        # the stub agents listen on loopback, which production mode (ADMIN_TOKEN) does not dial otherwise
        "EGRESS_ALLOW_CIDRS": "127.0.0.1/32",
        "LEADER_LEASE_TTL_SECONDS": str(LEASE_TTL),
        "LEADER_LEASE_RENEW_SECONDS": str(LEASE_RENEW),
        "SCHEDULER_INTERVAL": str(SCHEDULER_INTERVAL),
        "LIVENESS_SWEEP_INTERVAL": "0.5",
        "PROVISION_SWEEP_INTERVAL": "0.5",
        "HEALTH_SWEEP_INTERVAL": "0.5",
        "ORPHAN_SWEEP_INTERVAL": "0.5",
    }
    env.update(overrides)
    return env


class Replica:
    """One `serve` process (or, with `workers`, one `serve --workers N` parent and its workers)."""

    def __init__(
        self, name: str, env_of: Callable[[int], dict[str, str]], log_dir: Path, workers: int = 0
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_path = log_dir / f"server-{name}.log"
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "workspace_server", "serve", "--port", str(self.port)]
        if workers:
            argv += ["--workers", str(workers)]
        self.proc = subprocess.Popen(  # fixed argv, no shell
            argv, env=env_of(self.port), stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pids(self) -> set[int]:
        """The pids serving requests: the process itself, or its workers."""
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return set()
        return {c.pid for c in children if c.is_running()} or {self.proc.pid}

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server {self.name} exited; log:\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/events", headers=ADMIN_H, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """kill -9: no lease release, no clean shutdown of anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def wait_all_ready(replicas: Sequence[Replica]) -> None:
    deadline = time.monotonic() + STARTUP
    pending = list(replicas)
    while pending:
        pending = [r for r in pending if not r.ready()]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"server {pending[0].name} did not start; log:\n{pending[0].log_tail()}")
        if pending:
            time.sleep(0.2)


async def poll(fn: Callable[[], Awaitable[Any]], what: str, timeout: float) -> Any:
    """`fn()`'s first truthy result, polled every 0.1 s; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def query(db_url: str, stmt: Any) -> list[Any]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(stmt)).all())
    finally:
        await engine.dispose()


async def execute(db_url: str, stmt: Any) -> None:
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(stmt)
    finally:
        await engine.dispose()


async def lease_holder_pid(db_url: str, name: str = "sweepers") -> int | None:
    """The pid in the unexpired `name` lease's holder (`host:pid:random`), None while nobody holds it."""
    rows = await query(
        db_url,
        sa.select(leader_leases.c.holder).where(
            leader_leases.c.name == name, leader_leases.c.expires_at > utcnow()
        ),
    )
    return int(rows[0].holder.rsplit(":", 2)[1]) if rows else None


async def sse_events(client: httpx.AsyncClient, path: str) -> AsyncIterator[dict[str, Any]]:
    """The `data:` frames of an SSE stream, decoded."""
    async with client.stream("GET", path, headers=ADMIN_H) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                yield json.loads(line[len("data: ") :])


async def seed(db_url: str, url: str | None = None) -> tuple[str, str]:
    """An online workspace (at `url`) and its token."""
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            ws_id = new_id()
            await insert_workspace(conn, id=ws_id, name="replicated", status="online", url=url)
            token = await issue_workspace_token(conn, ws_id)
    finally:
        await engine.dispose()
    return ws_id, token


async def heartbeat(client: httpx.AsyncClient, ws_id: str, token: str, active_tasks: int = 0) -> None:
    body = {"workspace_id": ws_id, "error_rate": 0, "sample_error": "", "active_tasks": active_tasks}
    r = await client.post("/registry/heartbeat", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
