"""Restart / pause / resume / hibernate routes: auth, exact error bodies, cascade and status rules.

No backend here (WORKSPACE_BACKEND=none): restart and resume answer 503, while pause and hibernate
still move the rows (there is nothing to stop). Runs on SQLite and Postgres.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

ADMIN = "routes-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"


@pytest.fixture
async def api(client_factory: Any) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await client_factory(ADMIN_TOKEN=ADMIN)
    return client


async def make(api: httpx.AsyncClient, name: str, parent: str | None = None) -> str:
    body: dict[str, Any] = {"name": name, "runtime": "echo"}
    if parent:
        body["parent_id"] = parent
    r = await api.post("/workspaces", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def bring_online(api: httpx.AsyncClient, wid: str, active_tasks: int = 0) -> None:
    card = {"name": "agent", "skills": [{"id": "echo", "name": "Echo"}]}
    # ADMIN_TOKEN set: only an admin register mints a tokenless workspace's token (issue 11 §1)
    r = await api.post(
        "/registry/register", json={"id": wid, "url": "http://localhost:9", "agent_card": card}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    token = r.json()["auth_token"]
    hb = {"workspace_id": wid, "error_rate": 0, "active_tasks": active_tasks, "uptime_seconds": 5}
    r = await api.post("/registry/heartbeat", json=hb, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


async def status(api: httpx.AsyncClient, wid: str) -> str:
    return str((await api.get(f"/workspaces/{wid}")).json()["status"])


async def events(api: httpx.AsyncClient, wid: str, kind: str) -> list[dict[str, Any]]:
    r = await api.get(f"/events/{wid}", headers=AUTH)
    return [e["payload"] for e in r.json() if e["event_type"] == kind]


async def test_auth_and_unknown_ids(api: httpx.AsyncClient) -> None:
    wid = await make(api, "a")
    for verb in ("restart", "pause", "resume", "hibernate"):
        r = await api.post(f"/workspaces/{wid}/{verb}")
        assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"}), verb
        r = await api.post(f"/workspaces/{wid}/{verb}", headers={"Authorization": "Bearer nope"})
        assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"}), verb
    expected = {
        "restart": "workspace not found",
        "pause": "workspace not found or already paused",
        "resume": "workspace not found or not paused",
        "hibernate": "workspace not found or not in a hibernatable state (must be online or degraded)",
    }
    for verb, msg in expected.items():
        for bad in (UNKNOWN, "not-a-uuid"):
            r = await api.post(f"/workspaces/{bad}/{verb}", headers=AUTH)
            assert (r.status_code, r.json()) == (404, {"error": msg}), (verb, bad)


async def test_restart_and_resume_need_a_backend(api: httpx.AsyncClient) -> None:
    wid = await make(api, "lonely")
    r = await api.post(f"/workspaces/{wid}/restart", headers=AUTH)
    assert (r.status_code, r.json()) == (503, {"error": "provisioner not available"})
    r = await api.post(f"/workspaces/{wid}/restart", content=b"{nope", headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    r = await api.post(f"/workspaces/{wid}/restart", json={"reset": "yes"}, headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    assert await status(api, wid) == "failed"  # untouched by the refused restarts

    r = await api.post(f"/workspaces/{wid}/pause", headers=AUTH)
    assert r.status_code == 200
    r = await api.post(f"/workspaces/{wid}/resume", headers=AUTH)
    assert (r.status_code, r.json()) == (503, {"error": "provisioner not available"})
    assert await status(api, wid) == "paused"

    await api.delete(f"/workspaces/{wid}", headers=AUTH)
    r = await api.post(f"/workspaces/{wid}/restart", headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})  # removed stays removed


async def test_pause_cascades_and_paused_ancestors_block(api: httpx.AsyncClient) -> None:
    root = await make(api, "root")
    child = await make(api, "child", root)
    grand = await make(api, "grand", child)
    other = await make(api, "other")
    await bring_online(api, root)

    r = await api.post(f"/workspaces/{child}/pause", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"paused_count": 2, "status": "paused"})
    r = await api.post(f"/workspaces/{root}/pause", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"paused_count": 1, "status": "paused"})
    assert [await status(api, w) for w in (root, child, grand, other)] == [
        "paused",
        "paused",
        "paused",
        "failed",
    ]
    view = (await api.get(f"/workspaces/{root}")).json()
    assert view["url"] == ""
    assert await events(api, grand, "WORKSPACE_PAUSED") == [{"name": "grand"}]

    blocked = {"error": 'parent workspace "child" is paused — resume it first'}
    r = await api.post(f"/workspaces/{grand}/restart", headers=AUTH)
    assert (r.status_code, r.json()) == (409, blocked)  # before the 503: the ancestor is checked first
    r = await api.post(f"/workspaces/{root}/pause", headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found or already paused"})


async def test_hibernate_rules(api: httpx.AsyncClient) -> None:
    idle = await make(api, "idle")
    busy = await make(api, "busy")
    r = await api.post(f"/workspaces/{idle}/hibernate", headers=AUTH)
    assert r.status_code == 404  # failed, not online/degraded
    await bring_online(api, idle)
    await bring_online(api, busy, active_tasks=2)

    r = await api.post(f"/workspaces/{busy}/hibernate", headers=AUTH)
    assert (r.status_code, r.text) == (
        409,
        '{"error":"workspace has active tasks; use ?force=true to terminate them","active_tasks":2}',
    )
    assert await status(api, busy) == "online"

    r = await api.post(f"/workspaces/{idle}/hibernate", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"status": "hibernated"})
    # DECIDE (BUG fix): force hibernates a busy workspace for real instead of a 200 that changed nothing
    r = await api.post(f"/workspaces/{busy}/hibernate?force=true", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"status": "hibernated"})
    for wid, name in ((idle, "idle"), (busy, "busy")):
        assert await status(api, wid) == "hibernated"
        assert await events(api, wid, "WORKSPACE_HIBERNATED") == [{"name": name, "tier": 3}]
    r = await api.post(f"/workspaces/{idle}/hibernate", headers=AUTH)
    assert r.status_code == 404
