"""A provision run while the engine is away, against a scripted backend (issue 11 §5, exact cases of what
tests/faults/test_docker_faults.py meets by timing): a start that finds no engine at all is retried until
it answers; the token already on the volume stays valid until a start succeeded; start-up adoption.
Runs on SQLite and Postgres.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from workspace_server.auth import tokens
from workspace_server.db.schema import workspaces
from workspace_server.provisioner import provision_run as orch_mod
from workspace_server.provisioner.base import BackendError, EngineUnavailable, Started, StartSpec
from workspace_server.provisioner.orchestrator import Job, Orchestrator

ADMIN = "engine-away-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class ScriptedBackend:
    name = "docker"

    def __init__(self, script: list[BaseException | None]) -> None:
        self.script = script  # one entry per start call: raise it, or None = started
        self.starts: list[StartSpec] = []
        self.urls: dict[str, str] = {}

    async def start(self, spec: StartSpec) -> Started:
        self.starts.append(spec)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return Started(url="http://127.0.0.1:45678", instance_id="c1")

    async def stop(self, ws_id: str) -> None:
        return None

    async def instance_url(self, ws_id: str) -> str | None:
        return self.urls.get(ws_id)

    def shares_host_network(self, tier: int) -> bool:
        return False

    def network_url(self, ws_id: str, url: str, tier: int) -> str:
        return url

    async def close(self) -> None:
        return None


@pytest.fixture
async def api(client_factory: Any) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await client_factory(ADMIN_TOKEN=ADMIN)
    return client


async def provisioning_row(ctx: Any, api: httpx.AsyncClient, name: str) -> tuple[str, str]:
    """A row in `provisioning` holding a live token (the one an earlier start put on its volume)."""
    r = await api.post("/workspaces", json={"name": name, "runtime": "echo"}, headers=AUTH)
    assert r.status_code == 201, r.text
    wid = str(r.json()["id"])
    async with ctx.engine.begin() as conn:
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == wid).values(status="provisioning"))
        old = await tokens.issue_workspace_token(conn, wid)
    return wid, old


async def valid(ctx: Any, token: str, wid: str) -> bool:
    async with ctx.engine.begin() as conn:
        return await tokens.validate_workspace_token(conn, token, wid) == wid


async def row(ctx: Any, wid: str) -> Any:
    async with ctx.engine.connect() as conn:
        return (await conn.execute(sa.select(workspaces).where(workspaces.c.id == wid))).one()


async def test_start_retried_while_engine_away_then_older_tokens_revoked(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orch_mod, "ENGINE_RETRY_SECONDS", 0.01)
    ctx = api.app.state.ctx  # type: ignore[attr-defined]
    away = EngineUnavailable("workspace start failed", "connection refused")
    backend = ScriptedBackend([away, away, None])
    orch = Orchestrator(ctx, backend)
    wid, old = await provisioning_row(ctx, api, "engine away")

    await orch._run(Job(ws_id=wid, name="engine away", role="", tier=2, runtime="echo", generate=True))

    assert len(backend.starts) == 3  # two refused, the third answered
    r = await row(ctx, wid)
    assert (r.status, r.url) == ("provisioning", "http://127.0.0.1:45678")  # waiting for the agent
    new = backend.starts[-1].config_files[".auth_token"].decode()
    assert await valid(ctx, new, wid)
    assert not await valid(ctx, old, wid)  # rotated, once the start succeeded


async def test_failed_start_keeps_the_token_on_the_volume_valid(api: httpx.AsyncClient) -> None:
    ctx = api.app.state.ctx  # type: ignore[attr-defined]
    backend = ScriptedBackend([BackendError("workspace start failed", "no such image layer")])
    orch = Orchestrator(ctx, backend)
    wid, old = await provisioning_row(ctx, api, "start fails")

    await orch._run(Job(ws_id=wid, name="start fails", role="", tier=2, runtime="echo", generate=True))

    assert len(backend.starts) == 1  # an answer that refuses is not retried
    r = await row(ctx, wid)
    assert r.status == "failed"
    # a container the engine brings back by itself still holds the old token: it must still register
    assert await valid(ctx, old, wid)


async def test_adoption_records_the_url_of_a_running_instance(api: httpx.AsyncClient) -> None:
    ctx = api.app.state.ctx  # type: ignore[attr-defined]
    backend = ScriptedBackend([])
    orch = Orchestrator(ctx, backend)
    unrecorded, _ = await provisioning_row(ctx, api, "unrecorded")
    registered, _ = await provisioning_row(ctx, api, "registered own url")
    gone, _ = await provisioning_row(ctx, api, "no instance")
    async with ctx.engine.begin() as conn:
        await conn.execute(
            sa.update(workspaces)
            .where(workspaces.c.id == registered)
            .values(status="online", url="http://localhost:9999")  # what the agent claimed
        )
    backend.urls = {unrecorded: "http://127.0.0.1:40001", registered: "http://127.0.0.1:40002"}

    assert sorted(await orch.adopt_instances()) == sorted([unrecorded, registered])
    assert (await row(ctx, unrecorded)).url == "http://127.0.0.1:40001"
    assert (await row(ctx, registered)).url == "http://127.0.0.1:40002"
    assert (await row(ctx, gone)).url in (None, "")
    assert await ctx.kv.get(f"ws:{registered}:url") == "http://127.0.0.1:40002"
    assert await orch.adopt_instances() == []  # recorded now: nothing left to adopt


async def test_provision_timeout_removes_the_instance(client_factory: Any) -> None:
    """A row the provision-timeout sweep fails keeps no instance: a server killed mid-create may have left
    a created-but-never-started container that nothing else would remove (the row is not `removed`)."""
    from workspace_server.loops.provision_timeout import sweep_provision_timeouts

    api: httpx.AsyncClient = await client_factory(ADMIN_TOKEN=ADMIN, PROVISION_TIMEOUT_SECONDS="60")
    ctx = api.app.state.ctx  # type: ignore[attr-defined]
    stopped: list[str] = []

    class Recording(ScriptedBackend):
        async def stop(self, ws_id: str) -> None:
            stopped.append(ws_id)

    ctx.orchestrator = Orchestrator(ctx, Recording([]))
    stuck, _ = await provisioning_row(ctx, api, "stuck")
    fresh, _ = await provisioning_row(ctx, api, "fresh")
    async with ctx.engine.begin() as conn:
        await conn.execute(
            sa.update(workspaces)
            .where(workspaces.c.id == stuck)
            .values(updated_at=datetime.now(UTC) - timedelta(minutes=5))
        )

    assert await sweep_provision_timeouts(ctx) == [stuck]
    assert stopped == [stuck]
    assert (await row(ctx, stuck)).status == "failed"
    assert (await row(ctx, fresh)).status == "provisioning"
