"""One pass of each sweeper, driven directly: liveness, provision timeout, activity pruning."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory
from workspace_server.common.ids import new_id
from workspace_server.common.kv import liveness_key, url_key
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.db.schema import activity_logs, structure_events, workspaces
from workspace_server.events.bus import Event
from workspace_server.loops.activity_prune import prune_once
from workspace_server.loops.liveness import sweep_liveness, wait_restarts
from workspace_server.loops.provision_timeout import TIMEOUT_MESSAGE, sweep_provision_timeouts
from workspace_server.loops.store import guarded_transition
from workspace_server.workspaces.store import insert_workspace
from workspace_server.workspaces.templates import clear_template_caches

EXPECTED_MESSAGE = (
    "provisioning timed out — container started but never called /registry/register. "
    "Check container logs and network connectivity to the platform."
)


def ctx_of(client: httpx.AsyncClient) -> AppContext:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    return ctx


async def add_ws(
    ctx: AppContext,
    *,
    status: str,
    runtime: str = "langgraph",
    heartbeat_age: float | None = None,
    updated_age: float = 0,
) -> str:
    ws_id = new_id()
    now = utcnow()
    hb = None if heartbeat_age is None else now - timedelta(seconds=heartbeat_age)
    async with ctx.engine.begin() as conn:
        await insert_workspace(
            conn, id=ws_id, name=f"ws-{ws_id[:4]}", runtime=runtime, status=status, last_heartbeat_at=hb
        )
        await conn.execute(
            sa.update(workspaces)
            .where(workspaces.c.id == ws_id)
            .values(updated_at=now - timedelta(seconds=updated_age))
        )
    return ws_id


async def status_of(ctx: AppContext, ws_id: str) -> str:
    async with ctx.engine.connect() as conn:
        return str(
            (await conn.execute(sa.select(workspaces.c.status).where(workspaces.c.id == ws_id))).scalar_one()
        )


async def row_of(ctx: AppContext, ws_id: str) -> Any:
    async with ctx.engine.connect() as conn:
        return (await conn.execute(sa.select(workspaces).where(workspaces.c.id == ws_id))).one()


async def recorded(ctx: AppContext, ws_id: str | None = None) -> list[tuple[str, str, Any]]:
    stmt = sa.select(
        structure_events.c.event_type, structure_events.c.workspace_id, structure_events.c.payload
    ).order_by(structure_events.c.created_at)
    if ws_id is not None:
        stmt = stmt.where(structure_events.c.workspace_id == ws_id)
    async with ctx.engine.connect() as conn:
        return [(r[0], r[1], r[2]) for r in (await conn.execute(stmt)).all()]


def listen(ctx: AppContext) -> list[Event]:
    got: list[Event] = []
    ctx.bus.add_listener(got.append)
    return got


# ---------------------------------------------------------------- liveness


@pytest.fixture
async def live_client(client_factory: ClientFactory) -> httpx.AsyncClient:
    return await client_factory(LIVENESS_TTL_SECONDS=180, REMOTE_LIVENESS_STALE_AFTER="90")


async def test_stale_heartbeat_goes_offline_with_event_keys_cleared_and_restart(
    live_client: httpx.AsyncClient,
) -> None:
    ctx = ctx_of(live_client)
    restarted: list[str] = []

    async def restart(ws_id: str) -> None:
        restarted.append(ws_id)

    ctx.restart_hook = restart
    stale = await add_ws(ctx, status="online", heartbeat_age=200, updated_age=200)
    stale_degraded = await add_ws(ctx, status="degraded", heartbeat_age=500, updated_age=500)
    fresh = await add_ws(ctx, status="online", heartbeat_age=30, updated_age=300)
    await ctx.kv.set(liveness_key(stale), "online", 600)
    await ctx.kv.set(url_key(stale), "http://agent", 600)
    await ctx.kv.set(url_key(fresh), "http://fresh", 600)
    events = listen(ctx)

    offline = await sweep_liveness(ctx)
    await wait_restarts(ctx)

    assert sorted(offline) == sorted([stale, stale_degraded])
    assert await status_of(ctx, stale) == "offline"
    assert await status_of(ctx, stale_degraded) == "offline"
    assert await status_of(ctx, fresh) == "online"
    assert await recorded(ctx, stale) == [("WORKSPACE_OFFLINE", stale, {})]
    assert await recorded(ctx, fresh) == []
    assert sorted((e.event, e.workspace_id) for e in events) == sorted(
        [("WORKSPACE_OFFLINE", stale), ("WORKSPACE_OFFLINE", stale_degraded)]
    )
    assert sorted(restarted) == sorted([stale, stale_degraded])
    assert await ctx.kv.get(liveness_key(stale)) is None
    assert await ctx.kv.get(url_key(stale)) is None
    assert await ctx.kv.get(url_key(fresh)) == "http://fresh"


async def test_liveness_leaves_other_statuses_alone(live_client: httpx.AsyncClient) -> None:
    ctx = ctx_of(live_client)
    untouched = {
        s: await add_ws(ctx, status=s, heartbeat_age=10_000, updated_age=10_000)
        for s in ("removed", "paused", "hibernated", "failed", "provisioning", "offline", "awaiting_agent")
    }
    assert await sweep_liveness(ctx) == []
    for s, ws_id in untouched.items():
        assert await status_of(ctx, ws_id) == s
    assert await recorded(ctx) == []


async def test_never_heartbeated_row_is_judged_by_its_last_write(live_client: httpx.AsyncClient) -> None:
    ctx = ctx_of(live_client)
    old = await add_ws(ctx, status="online", heartbeat_age=None, updated_age=400)
    young = await add_ws(ctx, status="online", heartbeat_age=None, updated_age=5)
    assert await sweep_liveness(ctx) == [old]
    assert await status_of(ctx, young) == "online"


async def test_external_agents_use_the_remote_threshold_and_are_not_restarted(
    live_client: httpx.AsyncClient,
) -> None:
    ctx = ctx_of(live_client)
    restarted: list[str] = []

    async def restart(ws_id: str) -> None:
        restarted.append(ws_id)

    ctx.restart_hook = restart
    ext_stale = await add_ws(ctx, status="online", runtime="external", heartbeat_age=120, updated_age=120)
    ext_fresh = await add_ws(ctx, status="online", runtime="external", heartbeat_age=60, updated_age=60)
    ours_120 = await add_ws(ctx, status="online", heartbeat_age=120, updated_age=120)  # under 180 s

    assert await sweep_liveness(ctx) == [ext_stale]
    await wait_restarts(ctx)
    assert await status_of(ctx, ext_fresh) == "online"
    assert await status_of(ctx, ours_120) == "online"
    assert await recorded(ctx, ext_stale) == [("WORKSPACE_OFFLINE", ext_stale, {})]
    assert restarted == []


async def test_no_restart_hook_is_fine_and_a_failing_hook_does_not_break_the_sweep(
    live_client: httpx.AsyncClient,
) -> None:
    ctx = ctx_of(live_client)
    a = await add_ws(ctx, status="online", heartbeat_age=999, updated_age=999)
    assert await sweep_liveness(ctx) == [a]

    async def broken(ws_id: str) -> None:
        raise RuntimeError("docker is down")

    ctx.restart_hook = broken
    b = await add_ws(ctx, status="online", heartbeat_age=999, updated_age=999)
    assert await sweep_liveness(ctx) == [b]
    await wait_restarts(ctx)
    assert await status_of(ctx, b) == "offline"


async def test_second_pass_does_nothing(live_client: httpx.AsyncClient) -> None:
    ctx = ctx_of(live_client)
    a = await add_ws(ctx, status="online", heartbeat_age=999, updated_age=999)
    assert await sweep_liveness(ctx) == [a]
    assert await sweep_liveness(ctx) == []
    assert len(await recorded(ctx, a)) == 1


async def test_short_ttl_from_settings(client_factory: ClientFactory) -> None:
    ctx = ctx_of(await client_factory(LIVENESS_TTL_SECONDS=5))
    a = await add_ws(ctx, status="online", heartbeat_age=10, updated_age=10)
    assert await sweep_liveness(ctx) == [a]


async def test_guard_rechecked_at_update_time(live_client: httpx.AsyncClient) -> None:
    """A heartbeat landing after selection wins: the guarded change touches nothing and emits nothing."""
    ctx = ctx_of(live_client)
    ws_id = await add_ws(ctx, status="online", heartbeat_age=5, updated_age=5)
    still_stale = workspaces.c.last_heartbeat_at < utcnow() - timedelta(seconds=180)
    changed = await guarded_transition(
        ctx,
        ws_id,
        still_stale,
        to="offline",
        expect=("online", "degraded"),
        event="WORKSPACE_OFFLINE",
        payload={},
    )
    assert changed is False
    assert await status_of(ctx, ws_id) == "online"
    assert await recorded(ctx) == []


# ---------------------------------------------------------------- provision timeout


async def test_old_provisioning_row_fails_with_message_and_event(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    old = await add_ws(ctx, status="provisioning", updated_age=610)
    young = await add_ws(ctx, status="provisioning", updated_age=590)
    online_old = await add_ws(ctx, status="online", heartbeat_age=1, updated_age=5000)
    events = listen(ctx)

    assert await sweep_provision_timeouts(ctx) == [old]

    row = await row_of(ctx, old)
    assert row.status == "failed"
    assert row.last_sample_error == EXPECTED_MESSAGE
    assert TIMEOUT_MESSAGE == EXPECTED_MESSAGE
    payload = {
        "error": EXPECTED_MESSAGE,
        "timeout_secs": 600,
        "runtime": "langgraph",
        "source": "provision_timeout_sweep",
    }
    assert await recorded(ctx) == [("WORKSPACE_PROVISION_FAILED", old, payload)]
    assert [(e.event, e.workspace_id, e.payload) for e in events] == [
        ("WORKSPACE_PROVISION_FAILED", old, payload)
    ]
    assert await status_of(ctx, young) == "provisioning"
    assert await status_of(ctx, online_old) == "online"

    assert await sweep_provision_timeouts(ctx) == []  # nothing left to change: no second event
    assert len(await recorded(ctx)) == 1


async def test_hermes_gets_thirty_minutes(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    at_11_min = await add_ws(ctx, status="provisioning", runtime="hermes", updated_age=660)
    at_31_min = await add_ws(ctx, status="provisioning", runtime="hermes", updated_age=1860)
    assert await sweep_provision_timeouts(ctx) == [at_31_min]
    assert await status_of(ctx, at_11_min) == "provisioning"
    [(_, _, payload)] = await recorded(ctx, at_31_min)
    assert payload["timeout_secs"] == 1800
    assert payload["runtime"] == "hermes"


async def test_env_override_applies_to_every_runtime(client_factory: ClientFactory) -> None:
    ctx = ctx_of(await client_factory(PROVISION_TIMEOUT_SECONDS="60"))
    hermes = await add_ws(ctx, status="provisioning", runtime="hermes", updated_age=90)
    other = await add_ws(ctx, status="provisioning", runtime="langgraph", updated_age=90)
    young = await add_ws(ctx, status="provisioning", runtime="langgraph", updated_age=30)
    assert sorted(await sweep_provision_timeouts(ctx)) == sorted([hermes, other])
    assert await status_of(ctx, young) == "provisioning"
    for ws_id in (hermes, other):
        [(_, _, payload)] = await recorded(ctx, ws_id)
        assert payload["timeout_secs"] == 60


@pytest.mark.parametrize("bad", ["abc", "0", "-5"])
async def test_bad_env_override_falls_back_to_defaults(client_factory: ClientFactory, bad: str) -> None:
    ctx = ctx_of(await client_factory(PROVISION_TIMEOUT_SECONDS=bad))
    young = await add_ws(ctx, status="provisioning", updated_age=300)
    old = await add_ws(ctx, status="provisioning", updated_age=700)
    assert await sweep_provision_timeouts(ctx) == [old]
    assert await status_of(ctx, young) == "provisioning"


async def test_template_timeout_is_honoured_by_the_sweeper(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    tpl = tmp_path / "configs" / "slow-agent"
    tpl.mkdir(parents=True)
    (tpl / "config.yaml").write_text(
        "name: slow\nruntime: claude-code\nruntime_config:\n  provision_timeout_seconds: 1200\n"
    )
    clear_template_caches()
    ctx = ctx_of(await client_factory())
    past_default = await add_ws(ctx, status="provisioning", runtime="claude-code", updated_age=900)
    past_template = await add_ws(ctx, status="provisioning", runtime="claude-code", updated_age=1300)
    other_runtime = await add_ws(ctx, status="provisioning", runtime="langgraph", updated_age=900)

    failed = await sweep_provision_timeouts(ctx)

    assert sorted(failed) == sorted([past_template, other_runtime])
    assert await status_of(ctx, past_default) == "provisioning"
    [(_, _, payload)] = await recorded(ctx, past_template)
    assert payload["timeout_secs"] == 1200
    [(_, _, payload)] = await recorded(ctx, other_runtime)
    assert payload["timeout_secs"] == 600


async def test_row_bumped_after_selection_is_not_failed(client: httpx.AsyncClient) -> None:
    """The age is re-checked in the same transaction as the UPDATE (a restart resets updated_at)."""
    ctx = ctx_of(client)
    ws_id = await add_ws(ctx, status="provisioning", updated_age=5)
    cutoff = utcnow() - timedelta(seconds=600)
    changed = await guarded_transition(
        ctx,
        ws_id,
        workspaces.c.updated_at <= cutoff,
        to="failed",
        expect=("provisioning",),
        event="WORKSPACE_PROVISION_FAILED",
        payload={},
    )
    assert changed is False
    assert await status_of(ctx, ws_id) == "provisioning"
    assert await recorded(ctx) == []


# ---------------------------------------------------------------- activity pruning


async def add_activity(ctx: AppContext, ws_id: str, age_days: float) -> str:
    row_id = new_id()
    async with ctx.engine.begin() as conn:
        await conn.execute(
            sa.insert(activity_logs).values(
                id=row_id,
                workspace_id=ws_id,
                activity_type="a2a_receive",
                created_at=utcnow() - timedelta(days=age_days),
            )
        )
    return row_id


async def activity_ids(ctx: AppContext) -> set[str]:
    async with ctx.engine.connect() as conn:
        return {r[0] for r in (await conn.execute(sa.select(activity_logs.c.id))).all()}


async def test_pruning_deletes_only_rows_past_retention(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_ws(ctx, status="online")
    old = await add_activity(ctx, ws_id, 8)
    keep = [await add_activity(ctx, ws_id, d) for d in (0, 1, 6.9)]
    assert await prune_once(ctx) == 1
    assert await activity_ids(ctx) == set(keep)
    assert old not in await activity_ids(ctx)


async def test_pruning_honours_retention_days(client_factory: ClientFactory) -> None:
    ctx = ctx_of(await client_factory(ACTIVITY_RETENTION_DAYS="2"))
    ws_id = await add_ws(ctx, status="online")
    old = await add_activity(ctx, ws_id, 3)
    keep = await add_activity(ctx, ws_id, 1)
    assert await prune_once(ctx) == 1
    assert await activity_ids(ctx) == {keep}
    assert old != keep


async def test_restart_tasks_do_not_block_the_sweep(live_client: httpx.AsyncClient) -> None:
    """A slow restart runs in the background: the pass returns while it is still going."""
    ctx = ctx_of(live_client)
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_restart(ws_id: str) -> None:
        started.set()
        await release.wait()

    ctx.restart_hook = slow_restart
    a = await add_ws(ctx, status="online", heartbeat_age=999, updated_age=999)
    assert await sweep_liveness(ctx) == [a]
    await asyncio.wait_for(started.wait(), timeout=10)
    release.set()
    await wait_restarts(ctx)
