"""Idle hibernation (loops/hibernation.py): which workspaces the sweep hibernates, the idle-since rule
the heartbeat keeps, and PATCH's `hibernation_idle_minutes`.

A scripted backend records stops so each case is exact; the orchestrator, its atomic claim and the
lifecycle transition are the real ones. The wake on the next A2A call is covered with real agents in
test_lifecycle_process.py. Runs on SQLite and Postgres.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.registry_support import mint_token, row
from tests.integration.test_orchestrator_sweeps import AUTH, online_workspace
from tests.integration.test_orchestrator_sweeps import api as api
from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspaces
from workspace_server.loops.hibernation import sweep_idle_hibernation
from workspace_server.provisioner.orchestrator import Orchestrator


class StopRecorder:
    name = "docker"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def stop(self, ws_id: str) -> None:
        self.stopped.append(ws_id)

    async def close(self) -> None:
        return None


def ctx_of(api: httpx.AsyncClient) -> Any:
    return api.app.state.ctx  # type: ignore[attr-defined]


async def set_columns(api: httpx.AsyncClient, ws_id: str, **values: Any) -> None:
    async with ctx_of(api).engine.begin() as conn:
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == ws_id).values(**values))


async def heartbeat(api: httpx.AsyncClient, ws_id: str, active_tasks: int) -> None:
    body = {"workspace_id": ws_id, "active_tasks": active_tasks}
    bearer = {"Authorization": f"Bearer {await mint_token(ctx_of(api), ws_id)}"}
    assert (await api.post("/registry/heartbeat", json=body, headers=bearer)).status_code == 200


@pytest.fixture
def backend(api: httpx.AsyncClient) -> StopRecorder:
    recorder = StopRecorder()
    ctx_of(api).orchestrator = Orchestrator(ctx_of(api), recorder)
    return recorder


async def test_sweep_hibernates_only_workspaces_idle_past_their_window(
    api: httpx.AsyncClient,
    backend: StopRecorder,
) -> None:
    long_ago = utcnow() - timedelta(minutes=30)
    cases = {
        "sleepy": {"hibernation_idle_minutes": 10, "idle_since": long_ago},
        "not opted in": {"idle_since": long_ago},
        "recently idle": {"hibernation_idle_minutes": 60, "idle_since": long_ago},
        "busy": {"hibernation_idle_minutes": 10, "idle_since": long_ago, "active_tasks": 1},
        "never idle": {"hibernation_idle_minutes": 10, "idle_since": None},
        "offline": {"hibernation_idle_minutes": 10, "idle_since": long_ago, "status": "offline"},
    }
    ids = {}
    for name, values in cases.items():
        ids[name] = await online_workspace(api, name)
        await set_columns(api, ids[name], **values)
    remote = await online_workspace(api, "remote", external=True, url="https://agent.example.com")
    await set_columns(api, remote, hibernation_idle_minutes=10, idle_since=long_ago)

    assert await sweep_idle_hibernation(ctx_of(api)) == [ids["sleepy"]]
    assert backend.stopped == [ids["sleepy"]]
    sleepy = await row(ctx_of(api), ids["sleepy"])
    assert (sleepy.status, sleepy.url) == ("hibernated", "")
    events = (await api.get(f"/events/{ids['sleepy']}", headers=AUTH)).json()
    assert events[0]["event_type"] == "WORKSPACE_HIBERNATED"
    for name in set(cases) - {"sleepy", "offline"}:
        assert (await row(ctx_of(api), ids[name])).status == "online", name
    assert (await row(ctx_of(api), remote)).status == "online"

    assert await sweep_idle_hibernation(ctx_of(api)) == []  # hibernated rows are no longer candidates
    assert backend.stopped == [ids["sleepy"]]


async def test_heartbeats_keep_the_idle_since_time(api: httpx.AsyncClient, backend: StopRecorder) -> None:
    """The reference compared last_heartbeat_at, which every heartbeat refreshes: a live workspace never
    qualified. Idle heartbeats keep the first idle time; a task clears it."""
    wid = await online_workspace(api, "agent")
    long_ago = utcnow() - timedelta(minutes=30)
    await set_columns(api, wid, hibernation_idle_minutes=10, idle_since=long_ago)
    await heartbeat(api, wid, 0)
    assert (await row(ctx_of(api), wid)).idle_since == long_ago  # still idle since then
    await heartbeat(api, wid, 1)
    assert (await row(ctx_of(api), wid)).idle_since is None
    await heartbeat(api, wid, 0)
    assert utcnow() - (await row(ctx_of(api), wid)).idle_since < timedelta(minutes=1)
    assert await sweep_idle_hibernation(ctx_of(api)) == []  # idle again, but only just
    assert backend.stopped == []
    await set_columns(api, wid, idle_since=long_ago)
    card = {"name": "agent", "skills": []}
    reg = {"id": wid, "url": "http://localhost:9", "agent_card": card}
    bearer = {"Authorization": f"Bearer {await mint_token(ctx_of(api), wid)}"}
    assert (await api.post("/registry/register", json=reg, headers=bearer)).status_code == 200
    assert (await row(ctx_of(api), wid)).idle_since is None  # a (re)started agent starts the clock anew


async def test_claim_refuses_a_workspace_busy_since_the_sweep_read_it(
    api: httpx.AsyncClient,
    backend: StopRecorder,
) -> None:
    """The sweep reads candidates, then claims each: a task that started and ended in between (a newer
    idle_since) keeps the workspace awake."""
    wid = await online_workspace(api, "agent")
    await set_columns(api, wid, hibernation_idle_minutes=10, idle_since=utcnow())
    orch = ctx_of(api).orchestrator
    assert not await orch.hibernate_workspace(wid, idle_before=utcnow() - timedelta(minutes=10))
    assert (await row(ctx_of(api), wid)).status == "online"
    assert backend.stopped == []


async def test_sweep_without_backend_does_nothing(api: httpx.AsyncClient) -> None:
    wid = await online_workspace(api, "solo")
    await set_columns(api, wid, hibernation_idle_minutes=1, idle_since=utcnow() - timedelta(hours=1))
    assert await sweep_idle_hibernation(ctx_of(api)) == []
    assert (await row(ctx_of(api), wid)).status == "online"


async def test_patch_sets_and_clears_idle_minutes(api: httpx.AsyncClient) -> None:
    wid = await online_workspace(api, "agent")
    r = await api.patch(f"/workspaces/{wid}", json={"hibernation_idle_minutes": 15}, headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"status": "updated"})
    assert (await row(ctx_of(api), wid)).hibernation_idle_minutes == 15
    for off in (0, None):
        await api.patch(f"/workspaces/{wid}", json={"hibernation_idle_minutes": 15}, headers=AUTH)
        r = await api.patch(f"/workspaces/{wid}", json={"hibernation_idle_minutes": off}, headers=AUTH)
        assert r.status_code == 200
        assert (await row(ctx_of(api), wid)).hibernation_idle_minutes is None
    for bad in (-1, 1.5, "10", True, 2**40, [], {}):
        body = {"name": "renamed", "hibernation_idle_minutes": bad}
        r = await api.patch(f"/workspaces/{wid}", json=body, headers=AUTH)
        assert (r.status_code, r.json()) == (
            400,
            {"error": "hibernation_idle_minutes must be a non-negative integer or null"},
        ), bad
        assert (await row(ctx_of(api), wid)).name == "agent"  # refused before any write
