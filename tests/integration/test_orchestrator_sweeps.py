"""Health sweep decisions against a scripted backend, and the refresh route's input rules.

The backend here is a stand-in so each case is exact (dead, alive, erroring); the real-container path
is covered by the e2e and process-backend lifecycle tests. Runs on SQLite and Postgres.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from workspace_server.loops.health import RESTARTS_GROUP, sweep_health
from workspace_server.provisioner.orchestrator import Orchestrator

ADMIN = "sweeps-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class ScriptedBackend:
    name = "docker"

    def __init__(self) -> None:
        self.dead: set[str] = set()
        self.broken: set[str] = set()
        self.asked: list[str] = []

    async def is_running(self, ws_id: str) -> bool:
        self.asked.append(ws_id)
        if ws_id in self.broken:
            raise RuntimeError("engine timeout")
        return ws_id not in self.dead

    async def close(self) -> None:
        return None


class RecordingOrchestrator(Orchestrator):
    def __init__(self, ctx: Any, backend: Any) -> None:
        super().__init__(ctx, backend)
        self.restarted: list[str] = []

    async def restart_by_id(self, ws_id: str) -> None:
        self.restarted.append(ws_id)


@pytest.fixture
async def api(client_factory: Any) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await client_factory(ADMIN_TOKEN=ADMIN)
    return client


async def online_workspace(api: httpx.AsyncClient, name: str, **extra: Any) -> str:
    r = await api.post("/workspaces", json={"name": name, "runtime": "echo", **extra}, headers=AUTH)
    wid = str(r.json()["id"])
    if not extra.get("external"):
        card = {"name": name, "skills": [{"id": "echo", "name": "Echo"}]}
        reg = {"id": wid, "url": "http://localhost:9", "agent_card": card}
        # ADMIN_TOKEN set: only an admin register mints a tokenless workspace's token (issue 11 §1)
        assert (await api.post("/registry/register", json=reg, headers=AUTH)).status_code == 200
    return wid


async def test_health_sweep_restarts_only_dead_instances(api: httpx.AsyncClient) -> None:
    ctx = api.app.state.ctx  # type: ignore[attr-defined]
    backend = ScriptedBackend()
    orch = RecordingOrchestrator(ctx, backend)
    ctx.orchestrator = orch
    dead = await online_workspace(api, "dead")
    alive = await online_workspace(api, "alive")
    flaky = await online_workspace(api, "flaky")
    ext = await online_workspace(api, "remote", external=True, url="https://agent.example.com")
    backend.dead |= {dead, ext}
    backend.broken.add(flaky)

    assert await sweep_health(ctx) == [dead]
    await asyncio.gather(*ctx.tasks.tasks(RESTARTS_GROUP))
    assert orch.restarted == [dead]
    assert ext not in backend.asked  # external agents are not ours to check
    statuses = {w: (await api.get(f"/workspaces/{w}")).json()["status"] for w in (dead, alive, flaky, ext)}
    assert statuses == {dead: "offline", alive: "online", flaky: "online", ext: "online"}
    events = (await api.get(f"/events/{dead}", headers=AUTH)).json()
    assert events[0]["event_type"] == "WORKSPACE_OFFLINE" and events[0]["payload"] == {}

    assert await sweep_health(ctx) == []  # offline rows are no longer candidates
    assert orch.restarted == [dead]


async def test_health_sweep_without_backend_does_nothing(api: httpx.AsyncClient) -> None:
    ctx = api.app.state.ctx  # type: ignore[attr-defined]
    wid = await online_workspace(api, "solo")
    assert await sweep_health(ctx) == []
    assert (await api.get(f"/workspaces/{wid}")).json()["status"] == "online"


async def test_refresh_route_input_rules(api: httpx.AsyncClient) -> None:
    r = await api.post("/admin/workspace-images/refresh")
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    r = await api.post("/admin/workspace-images/refresh?runtime=nope", headers=AUTH)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "unknown runtime: nope"
    assert "echo" in body["known_runtimes"] and "langgraph" in body["known_runtimes"]
    assert "external" not in body["known_runtimes"]
    r = await api.post("/admin/workspace-images/refresh?runtime=echo", headers=AUTH)
    assert (r.status_code, r.json()) == (503, {"error": "image refresh needs the docker workspace backend"})
