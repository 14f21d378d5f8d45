"""The scheduler (spec 05 §6) against a live stub agent: fire, claim once, busy skip, outcomes, repair."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory, free_port
from tests.integration.a2a_support import StubAgent, activity, wait_for
from tests.integration.registry_support import (
    Captured,
    add_workspace,
    bearer,
    ctx_of,
    recorded_events,
    row,
    set_columns,
)
from tests.integration.test_schedules_routes import schedule_row, set_schedule
from workspace_server.common.ids import new_id
from workspace_server.context import AppContext
from workspace_server.db.schema import activity_logs, workspace_schedules
from workspace_server.schedules.scheduler import Scheduler, sweep_phantom_busy

ADMIN = "admin-secret"
AH = bearer(ADMIN)
LOOPBACK = "127.0.0.1/32"  # ADMIN_TOKEN = production mode: the operator lets the loopback stub be dialed


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


async def setup(
    client_factory: ClientFactory, agent_url: str, **overrides: Any
) -> tuple[httpx.AsyncClient, AppContext, str]:
    client = await client_factory(
        MOLECULE_ENV="development", ADMIN_TOKEN=ADMIN, EGRESS_ALLOW_CIDRS=LOOPBACK, **overrides
    )
    ctx = ctx_of(client)
    ws = await add_workspace(ctx, "Cron Agent", status="online", url=agent_url)
    return client, ctx, ws


async def due_schedule(
    client: httpx.AsyncClient, ws: str, name: str = "hourly", prompt: str = "report"
) -> str:
    """A schedule whose slot has just passed."""
    r = await client.post(
        f"/workspaces/{ws}/schedules",
        json={"name": name, "cron_expr": "0 * * * *", "prompt": prompt},
        headers=AH,
    )
    assert r.status_code == 201, r.text
    schedule_id = str(r.json()["id"])
    await set_schedule(ctx_of(client), schedule_id, next_run_at=datetime.now(UTC) - timedelta(seconds=5))
    return schedule_id


def fast(ctx: AppContext) -> Scheduler:
    return Scheduler(ctx, busy_wait=0.6, busy_recheck=0.1)


async def test_due_schedule_fires_through_the_proxy(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    events = Captured(ctx)
    sid = await due_schedule(client, ws, prompt="daily report\nplease")
    started = datetime.now(UTC)

    assert await fast(ctx).tick() == [sid]

    (sent,) = agent.received
    assert sent["method"] == "message/send" and sent["jsonrpc"] == "2.0"
    message = sent["params"]["message"]
    assert message["parts"] == [{"kind": "text", "text": "daily report\nplease"}]
    assert message["role"] == "user" and message["messageId"].startswith(f"cron-{sid[:8]}-")
    after = await schedule_row(ctx, sid)
    assert (after.run_count, after.last_status, after.last_error) == (1, "ok", "")
    assert after.last_run_at >= started
    assert started < after.next_run_at <= started + timedelta(hours=1)  # advanced to the next slot

    (run,) = await activity(ctx, ws, "cron_run")
    assert (run.method, run.summary, run.status, run.source_id) == ("cron", "Cron: hourly", "ok", None)
    assert run.request_body == {
        "schedule_id": sid,
        "schedule_name": "hourly",
        "cron_expr": "0 * * * *",
        "prompt": "daily report\nplease",
    }
    assert run.duration_ms is not None and run.duration_ms >= 0
    # the proxied call is logged like any other (the proxy's log writer batches: wait for it)
    await wait_for(lambda: activity(ctx, ws, "a2a_receive"), "the a2a_receive row")
    assert (
        "CRON_EXECUTED",
        {"schedule_id": sid, "schedule_name": "hourly", "status": "ok"},
    ) in await recorded_events(ctx, ws)
    assert events.of("A2A_RESPONSE"), "a cron call is a canvas-like call: its reply is broadcast"

    r = await client.get(f"/workspaces/{ws}/schedules/{sid}/history", headers=AH)
    assert r.status_code == 200
    (entry,) = r.json()
    assert list(entry) == ["timestamp", "duration_ms", "status", "error_detail", "request"]
    assert (entry["status"], entry["error_detail"], entry["request"]["schedule_id"]) == ("ok", "", sid)

    # nothing is due any more: a second tick sends nothing
    assert await fast(ctx).tick() == []
    assert len(agent.received) == 1


async def test_concurrent_ticks_fire_a_slot_once(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    sids = [await due_schedule(client, ws, name=f"s{i}") for i in range(3)]
    results = await asyncio.gather(*(fast(ctx).tick() for _ in range(4)))
    claimed = [sid for ids in results for sid in ids]
    assert sorted(claimed) == sorted(sids)  # every schedule claimed by exactly one tick
    assert len(agent.received) == 3
    for sid in sids:
        assert (await schedule_row(ctx, sid)).run_count == 1


async def test_busy_workspace_is_skipped_after_the_wait(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    await set_columns(ctx, ws, active_tasks=2, max_concurrent_tasks=2)
    events = Captured(ctx)
    sid = await due_schedule(client, ws)

    ticked = datetime.now(UTC)  # the next slot follows the tick (not the end of its wait: a slot may pass)
    assert await fast(ctx).tick() == [sid]

    assert agent.received == []
    after = await schedule_row(ctx, sid)
    reason = "skipped: workspace busy (active_tasks=2)"
    assert (after.run_count, after.last_status, after.last_error) == (1, "skipped", reason)
    assert after.next_run_at > ticked
    (run,) = await activity(ctx, ws, "cron_run")
    assert (run.summary, run.status, run.error_detail) == ("Cron skipped: hourly", "skipped", reason)
    assert run.request_body == {
        "schedule_id": sid,
        "schedule_name": "hourly",
        "cron_expr": "0 * * * *",
        "skipped": True,
        "active_tasks": 2,
    }
    assert events.of("CRON_SKIPPED") == [{"schedule_id": sid, "schedule_name": "hourly", "reason": reason}]


async def test_busy_workspace_that_frees_up_is_fired(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    await set_columns(ctx, ws, active_tasks=1)
    sid = await due_schedule(client, ws)
    scheduler = Scheduler(ctx, busy_wait=20.0, busy_recheck=0.1)
    tick = asyncio.create_task(scheduler.tick())
    await asyncio.sleep(0.3)
    assert agent.received == [] and not tick.done()  # still waiting for a free slot
    await set_columns(ctx, ws, active_tasks=0)
    assert await asyncio.wait_for(tick, 10) == [sid]
    assert len(agent.received) == 1
    assert (await schedule_row(ctx, sid)).last_status == "ok"


async def test_failures_are_recorded(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    sid = await due_schedule(client, ws)

    agent.mode, agent.status, agent.body = "status", 500, b'{"oops":true}'
    await fast(ctx).tick()
    after = await schedule_row(ctx, sid)
    assert (after.last_status, after.last_error) == ("error", "HTTP 500")

    agent.mode, agent.status = "status", 200
    agent.body = b'{"jsonrpc":"2.0","id":"1","error":{"code":-32601,"message":"Method not found"}}'
    await set_schedule(ctx, sid, next_run_at=datetime.now(UTC) - timedelta(seconds=1))
    await fast(ctx).tick()
    after = await schedule_row(ctx, sid)
    assert (after.last_status, after.last_error) == ("error", "Method not found")

    # an agent nobody answers for: the proxy's 502
    await set_columns(ctx, ws, url=f"http://127.0.0.1:{free_port()}")
    from workspace_server.a2a.caches import target_cache

    target_cache(ctx).drop(ws)
    await set_schedule(ctx, sid, next_run_at=datetime.now(UTC) - timedelta(seconds=1))
    await fast(ctx).tick()
    after = await schedule_row(ctx, sid)
    assert after.last_status == "error" and after.last_error
    assert after.run_count == 3
    runs = await activity(ctx, ws, "cron_run")
    assert [r.status for r in runs] == ["error", "error", "error"]
    assert all(r.error_detail for r in runs)


async def test_empty_replies_turn_stale(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    sid = await due_schedule(client, ws)
    agent.mode, agent.status = "status", 200
    agent.body = b'{"jsonrpc":"2.0","id":"1","result":{"kind":"message","parts":[{"kind":"text","text":""}]}}'
    statuses = []
    for _ in range(3):
        await set_schedule(ctx, sid, next_run_at=datetime.now(UTC) - timedelta(seconds=1))
        await fast(ctx).tick()
        r = await schedule_row(ctx, sid)
        statuses.append((r.last_status, r.consecutive_empty_runs))
    assert statuses == [("ok", 1), ("ok", 2), ("stale", 3)]
    stale = await schedule_row(ctx, sid)
    assert stale.last_error == "empty response 3 consecutive times — agent may be phantom-producing (#795)"

    agent.mode = "echo"  # a real answer ends the streak
    await set_schedule(ctx, sid, next_run_at=datetime.now(UTC) - timedelta(seconds=1))
    await fast(ctx).tick()
    healed = await schedule_row(ctx, sid)
    assert (healed.last_status, healed.last_error, healed.consecutive_empty_runs) == ("ok", "", 0)


async def test_native_scheduler_runtimes_are_only_advanced(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    ctx.runtime_overrides[ws] = {"capabilities": {"scheduler": True}}
    sid = await due_schedule(client, ws)
    ticked = datetime.now(UTC)  # the next slot follows the tick, which may end just past a slot
    assert await fast(ctx).tick() == [sid]
    assert agent.received == []
    after = await schedule_row(ctx, sid)
    assert (after.run_count, after.last_status) == (0, "")
    assert after.next_run_at > ticked


async def test_disabled_and_removed_are_not_fired(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    off = await due_schedule(client, ws, name="off")
    await set_schedule(ctx, off, enabled=False)
    gone = await add_workspace(ctx, "Gone", status="online", url=agent.url)
    await due_schedule(client, gone, name="gone")
    await set_columns(ctx, gone, status="removed")
    assert await fast(ctx).tick() == []
    assert agent.received == []


async def test_first_tick_repairs_missing_fire_times(client_factory: ClientFactory, agent: StubAgent) -> None:
    _, ctx, ws = await setup(client_factory, agent.url)
    hibernated = await add_workspace(ctx, "Sleeper", status="hibernated")
    rows = {}
    async with ctx.engine.begin() as conn:
        for ws_id, name, enabled in ((ws, "lost", True), (hibernated, "asleep", True), (ws, "off", False)):
            rows[name] = new_id()
            await conn.execute(
                sa.insert(workspace_schedules).values(
                    id=rows[name],
                    workspace_id=ws_id,
                    name=name,
                    cron_expr="*/5 * * * *",
                    prompt="p",
                    enabled=enabled,
                )
            )
    await fast(ctx).tick()
    now = datetime.now(UTC)
    for name in ("lost", "asleep"):
        fixed = await schedule_row(ctx, rows[name])
        assert now < fixed.next_run_at <= now + timedelta(minutes=5), name
    assert (await schedule_row(ctx, rows["off"])).next_run_at is None
    assert agent.received == []


async def test_phantom_busy_sweep(client_factory: ClientFactory, agent: StubAgent) -> None:
    _, ctx, quiet = await setup(client_factory, agent.url)
    chatty = await add_workspace(ctx, "Chatty", status="online")
    idle = await add_workspace(ctx, "Idle", status="online")
    await set_columns(ctx, quiet, active_tasks=3, current_task="stuck forever")
    await set_columns(ctx, chatty, active_tasks=1, current_task="working")
    async with ctx.engine.begin() as conn:
        for ws_id, age in ((quiet, timedelta(minutes=30)), (chatty, timedelta(minutes=1))):
            await conn.execute(
                sa.insert(activity_logs).values(
                    id=new_id(),
                    workspace_id=ws_id,
                    activity_type="agent_log",
                    created_at=datetime.now(UTC) - age,
                )
            )
    assert await sweep_phantom_busy(ctx) == [quiet]
    assert ((await row(ctx, quiet)).active_tasks, (await row(ctx, quiet)).current_task) == (0, "")
    assert (await row(ctx, chatty)).active_tasks == 1
    assert (await row(ctx, idle)).active_tasks == 0


async def test_deleting_a_workspace_disables_its_schedules(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, ws = await setup(client_factory, agent.url)
    sid = await due_schedule(client, ws)
    r = await client.delete(f"/workspaces/{ws}", headers=AH)
    assert r.status_code == 200, r.text
    assert (await schedule_row(ctx, sid)).enabled is False


async def test_the_loop_fires_on_its_own(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await client_factory(
        run_loops=True,
        MOLECULE_ENV="development",
        ADMIN_TOKEN=ADMIN,
        EGRESS_ALLOW_CIDRS=LOOPBACK,
        SCHEDULER_INTERVAL=0.2,
    )
    ctx = ctx_of(client)
    ws = await add_workspace(ctx, "Cron Agent", status="online", url=agent.url)
    sid = await due_schedule(client, ws)

    async def fired() -> bool:
        return (await schedule_row(ctx, sid)).run_count == 1

    await wait_for(fired, "the scheduler loop to fire the due schedule")
    assert len(agent.received) == 1
    r = await client.get("/admin/liveness", headers=AH)
    assert "scheduler" in r.json()["subsystems"]
