"""Shared fixtures.

`db_url` runs each integration test twice: on a fresh SQLite file and on a real Postgres database
(one throwaway database per test session, tables truncated between tests). `client_factory` builds the
app on that database and returns an httpx client speaking ASGI to it; `live_server` runs uvicorn on a
loopback port for WebSocket/SSE and multi-process tests.

Postgres/Redis/Docker missing: a loud skip on a developer machine, a failure in CI (CI=true).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from tests.integration.stub_http import ModelStub
from workspace_server.app import create_app
from workspace_server.cli import server_config
from workspace_server.config import Settings
from workspace_server.db.engine import make_engine
from workspace_server.db.migrate import upgrade_to_head
from workspace_server.db.schema import metadata

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_ENCRYPTION_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(what: str, ok: bool) -> None:
    """Skip loudly locally; fail in CI, where every dependency must be present."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not reachable")
    pytest.skip(f"{what} not reachable — start it to run this test (CI fails instead of skipping)")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A throwaway Postgres database for this session (None if Postgres is down)."""
    if not _port_open("127.0.0.1", 5432):
        yield None
        return
    name = f"wst_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    async def admin_exec(sql: str) -> None:
        admin = make_engine(PG_ADMIN_URL)  # per call: each asyncio.run has its own loop
        try:
            async with admin.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sa.text(sql))
        finally:
            await admin.dispose()

    async def create() -> None:
        await admin_exec(f'CREATE DATABASE "{name}"')
        eng = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        await upgrade_to_head(eng)
        await eng.dispose()

    async def drop() -> None:
        await admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    asyncio.run(create())
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(drop())


async def truncate_all(url: str) -> None:
    eng = make_engine(url)
    try:
        async with eng.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    finally:
        await eng.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ws.db"
    need("Postgres on 127.0.0.1:5432", pg_database is not None)
    assert pg_database is not None
    await truncate_all(pg_database)
    return pg_database


@pytest.fixture
def redis_url() -> str:
    need("Redis on 127.0.0.1:6379", _port_open("127.0.0.1", 6379))
    return REDIS_URL


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "DATABASE_URL": db_url,
        "REDIS_URL": "",
        "WORKSPACE_BACKEND": "none",
        "DATA_DIR": str(tmp_path / "data"),
        "CONFIGS_DIR": str(tmp_path / "configs"),
        "MOLECULE_ENV": "",
        "ADMIN_TOKEN": "",
        "RATE_LIMIT": "100000",
    }
    base.update(overrides)
    env = str(base.get("MOLECULE_ENV", "")).strip().lower()
    if env in ("prod", "production") and "SECRETS_ENCRYPTION_KEY" not in overrides:
        # production refuses to start without a key; tests about other production rules get one
        base["SECRETS_ENCRYPTION_KEY"] = TEST_ENCRYPTION_KEY
    return Settings(**base)


ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def client_factory(db_url: str, tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """`await client_factory(ADMIN_TOKEN="x", ...)` → an httpx client bound to a fresh app."""
    managers: list[LifespanManager] = []
    clients: list[httpx.AsyncClient] = []

    async def make(run_loops: bool = False, **overrides: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(db_url, tmp_path, **overrides), run_loops=run_loops)
        mgr = LifespanManager(app, startup_timeout=30, shutdown_timeout=30)
        await mgr.__aenter__()
        managers.append(mgr)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mgr.app, client=("127.0.0.1", 40000)),
            base_url="http://testserver",
        )
        client.app = app  # type: ignore[attr-defined]  # tests reach app.state.ctx through this
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()
    for m in reversed(managers):
        await m.__aexit__(None, None, None)


@pytest.fixture
async def client(client_factory: ClientFactory) -> httpx.AsyncClient:
    """A client on a default app: no ADMIN_TOKEN, not dev mode, no backend."""
    return await client_factory()


class LiveServer:
    def __init__(
        self, settings: Settings, run_loops: bool = False, host: str = "127.0.0.1", app: Any = None
    ) -> None:
        """`app`: serve this one (with `settings`' bounds) instead of the server's own."""
        import uvicorn

        self.port = free_port()  # free on loopback: other addresses of this host are as idle in a test
        self.url = f"http://{host}:{self.port}"
        self.app = app if app is not None else create_app(settings, run_loops=run_loops)
        config = server_config(self.app, host, self.port, log_level="warning", settings=settings)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server_factory(db_url: str, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(run_loops: bool = False, **overrides: Any) -> LiveServer:
        srv = LiveServer(make_settings(db_url, tmp_path, **overrides), run_loops=run_loops).start()
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.stop()


AgentStarter = Callable[..., Path]


@pytest.fixture
def reference_agents(tmp_path: Path) -> Iterator[AgentStarter]:
    """`start(ws_id, platform_url, name="Echo Agent")` runs `python -m molecule_agent` as a subprocess.

    The agent registers itself (saving its token in the returned config dir), heartbeats once right after,
    then stays quiet for two minutes so tests drive heartbeats themselves without races.
    """
    import subprocess
    import sys

    procs: list[subprocess.Popen[bytes]] = []

    def start(ws_id: str, platform_url: str, name: str = "Echo Agent") -> Path:
        cfg_dir = tmp_path / f"agent-{ws_id[:8]}"
        cfg_dir.mkdir()
        (cfg_dir / "config.yaml").write_text(
            f"name: {name}\nskills:\n  - id: echo\n    name: Echo\n", encoding="utf-8"
        )
        env = {
            **os.environ,
            "WORKSPACE_ID": ws_id,
            "PLATFORM_URL": platform_url,
            "WORKSPACE_CONFIG_PATH": str(cfg_dir),
            "A2A_PORT": str(free_port()),
            "A2A_HOST": "127.0.0.1",
            "HEARTBEAT_INTERVAL_SECONDS": "120",
        }
        env.pop("HOSTNAME", None)
        procs.append(subprocess.Popen([sys.executable, "-m", "molecule_agent"], env=env))
        return cfg_dir

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture
def model_stub() -> Iterator[ModelStub]:
    """An OpenAI-compatible endpoint on loopback (tests/integration/stub_http.py), closed afterwards."""
    stub = ModelStub()
    yield stub
    stub.close()
