"""The same lifecycle on the process backend (the embedded default without Docker): create, restart with
its restart context, pause/resume with cascade, a killed agent coming back, hibernate and wake, delete.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from tests.integration.orchestrator_support import (
    Platform,
    PlatformFactory,
    agent_reply,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from tests.integration.stub_http import ModelStub
from workspace_server.common.time import utcnow
from workspace_server.db.engine import make_engine
from workspace_server.db.schema import workspaces


def agent_pid(p: Platform, wid: str) -> int | None:
    pidfile = Path(p.settings.DATA_DIR).resolve() / "workspaces" / wid / "agent.pid"
    try:
        return int(json.loads(pidfile.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of the server stays a zombie until the backend reaps it
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def test_create_restart_sends_context_pause_resume_delete(
    platform_factory: PlatformFactory, model_stub: ModelStub
) -> None:
    p: Platform = await platform_factory("process")
    wid = await p.create("Local Agent", secrets={"OPENAI_BASE_URL": model_stub.url})
    view = await p.wait_status(wid, "online")
    assert view["url"].startswith("http://127.0.0.1:")
    assert await agent_reply(view["url"], "hi") == "noted"
    first_pid = agent_pid(p, wid)
    assert alive(first_pid)

    r = await p.http.post(f"/workspaces/{wid}/restart?reset=true", json={})
    assert (r.status_code, r.json()) == (
        200,
        {"config_dir": "existing-volume", "reset_session": True, "status": "provisioning"},
    )
    await p.wait_for(lambda: _new_pid(p, wid, first_pid), "a new agent process")
    await p.wait_status(wid, "online")
    assert not alive(first_pid)

    # the restart context reaches the new agent once it is online (here: forwarded to its model)
    context = await p.wait_for(
        lambda: _find(model_stub.prompts, "=== WORKSPACE RESTART CONTEXT ==="), "the restart context"
    )
    assert "Env vars now available: OPENAI_BASE_URL\n" in context
    assert "Previous session ended: " in context and context.endswith("=== END RESTART CONTEXT ===\n")

    r = await p.http.post(f"/workspaces/{wid}/pause")
    assert (r.status_code, r.json()) == (200, {"paused_count": 1, "status": "paused"})
    assert (await p.get(wid))["url"] == ""
    assert agent_pid(p, wid) is None
    r = await p.http.post(f"/workspaces/{wid}/resume")
    assert (r.status_code, r.json()) == (200, {"resumed_count": 1, "status": "provisioning"})
    view = await p.wait_status(wid, "online")
    assert await agent_reply(view["url"], "back") == "noted"

    pid = agent_pid(p, wid)
    r = await p.http.delete(f"/workspaces/{wid}")
    assert r.status_code == 200
    assert not alive(pid)
    assert not (Path(p.settings.DATA_DIR).resolve() / "workspaces" / wid / "configs").exists()


async def _new_pid(p: Platform, wid: str, old: int | None) -> bool:
    pid = agent_pid(p, wid)
    return pid is not None and pid != old


async def _find(items: list[str], needle: str) -> str | None:
    return next((s for s in items if needle in s), None)


async def test_pause_and_resume_cascade_through_children(platform_factory: PlatformFactory) -> None:
    p: Platform = await platform_factory("process")
    root = await p.create("Team Lead")
    child = await p.create("Team Member", parent_id=root)
    for wid in (root, child):
        await p.wait_status(wid, "online")

    r = await p.http.post(f"/workspaces/{root}/pause")
    assert (r.status_code, r.json()) == (200, {"paused_count": 2, "status": "paused"})
    assert [(await p.get(w))["status"] for w in (root, child)] == ["paused", "paused"]
    assert agent_pid(p, child) is None

    blocked = '{"error":"parent workspace \\"Team Lead\\" is paused — resume it first"}'
    r = await p.http.post(f"/workspaces/{child}/resume")
    assert (r.status_code, r.text) == (409, blocked)
    r = await p.http.post(f"/workspaces/{child}/restart")
    assert (r.status_code, r.text) == (409, blocked)

    r = await p.http.post(f"/workspaces/{root}/resume")
    assert (r.status_code, r.json()) == (200, {"resumed_count": 2, "status": "provisioning"})
    for wid in (root, child):
        await p.wait_status(wid, "online")
    assert ("WORKSPACE_PAUSED", {"name": "Team Member"}) in await p.events(child)


async def test_killed_agent_goes_offline_and_comes_back(platform_factory: PlatformFactory) -> None:
    p: Platform = await platform_factory("process", run_loops=True)
    wid = await p.create("Fragile Agent")
    await p.wait_status(wid, "online")
    pid = agent_pid(p, wid)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    await p.wait_for(lambda: _new_pid(p, wid, pid), "the health sweep's restart")
    view = await p.wait_status(wid, "online")
    assert await agent_reply(view["url"], "still here") == "still here"
    types = await p.event_types(wid)
    assert "WORKSPACE_OFFLINE" in types
    assert types[types.index("WORKSPACE_OFFLINE") + 1 :].count("WORKSPACE_ONLINE") >= 1


async def test_hibernate_then_wake_on_the_next_a2a_call(platform_factory: PlatformFactory) -> None:
    p: Platform = await platform_factory("process")
    wid = await p.create("Sleepy Agent")
    await p.wait_status(wid, "online")
    pid = agent_pid(p, wid)

    first, second = await asyncio.gather(
        p.http.post(f"/workspaces/{wid}/hibernate"), p.http.post(f"/workspaces/{wid}/hibernate")
    )
    codes = sorted([first.status_code, second.status_code])
    assert codes == [200, 404]  # the atomic claim lets exactly one through
    ok = first if first.status_code == 200 else second
    assert ok.json() == {"status": "hibernated"}
    view = await p.get(wid)
    assert (view["status"], view["url"]) == ("hibernated", "")
    assert not alive(pid)
    hibernated = [e for e in await p.events(wid) if e[0] == "WORKSPACE_HIBERNATED"]
    assert hibernated == [("WORKSPACE_HIBERNATED", {"name": "Sleepy Agent", "tier": 2})]

    r = await p.a2a(wid, "wake up")
    assert r.status_code == 503 and r.headers["retry-after"] == "15"
    assert r.json()["waking"] is True
    view = await p.wait_status(wid, "online")  # the wake restarted it (the reference never did)
    r = await p.a2a(wid, "good morning")
    assert r.status_code == 200 and r.json()["result"]["parts"][0]["text"] == "good morning"


async def test_idle_workspace_is_hibernated_by_the_sweep(platform_factory: PlatformFactory) -> None:
    """The loop itself (run_loops), a real agent heartbeating with no task: once its idle time passes
    the window it opted in to, it is hibernated and its process stopped; a call wakes it."""
    p: Platform = await platform_factory("process", run_loops=True, HIBERNATION_SWEEP_INTERVAL=0.2)
    wid = await p.create("Idle Agent")
    await p.wait_status(wid, "online")
    pid = agent_pid(p, wid)
    r = await p.http.patch(f"/workspaces/{wid}", json={"hibernation_idle_minutes": 1})
    assert r.status_code == 200
    await asyncio.sleep(1)
    assert (await p.get(wid))["status"] == "online"  # opted in, but not idle for a minute yet
    engine = make_engine(p.settings.DATABASE_URL)  # the server's engine belongs to its own loop
    try:
        async with engine.begin() as conn:
            stmt = sa.update(workspaces).where(workspaces.c.id == wid)
            await conn.execute(stmt.values(idle_since=utcnow() - timedelta(minutes=2)))
    finally:
        await engine.dispose()
    view = await p.wait_status(wid, "hibernated")
    assert view["url"] == ""
    assert not alive(pid)
    r = await p.a2a(wid, "wake up")
    assert r.status_code == 503 and r.json()["waking"] is True
    await p.wait_status(wid, "online")
