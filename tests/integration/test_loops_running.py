"""The real supervised loops inside a running app (run_loops=True, short intervals)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import sqlalchemy as sa

from tests.conftest import ClientFactory
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.db.schema import activity_logs, leader_leases, workspaces
from workspace_server.workspaces.store import insert_workspace

FAST = {
    "LIVENESS_SWEEP_INTERVAL": 0.05,
    "LIVENESS_TTL_SECONDS": 60,
    "PROVISION_SWEEP_INTERVAL": 0.05,
    "PROVISION_TIMEOUT_SECONDS": "60",
    "LEADER_LEASE_RENEW_SECONDS": 0.05,
    "LEADER_LEASE_TTL_SECONDS": 5,
    "ACTIVITY_CLEANUP_INTERVAL_HOURS": "0.00002",  # 72 ms
}


def ctx_of(client: httpx.AsyncClient) -> AppContext:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    return ctx


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = 30) -> None:
    """Poll until `check` holds; bounded so a broken loop fails the test instead of hanging it."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def add_ws(ctx: AppContext, status: str, age: float) -> str:
    ws_id = new_id()
    past = utcnow() - timedelta(seconds=age)
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name="w", status=status, last_heartbeat_at=past)
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == ws_id).values(updated_at=past))
    return ws_id


async def status_of(ctx: AppContext, ws_id: str) -> str:
    async with ctx.engine.connect() as conn:
        q = sa.select(workspaces.c.status).where(workspaces.c.id == ws_id)
        return str((await conn.execute(q)).scalar_one())


async def lease_holders(ctx: AppContext) -> list[str]:
    async with ctx.engine.connect() as conn:
        q = sa.select(leader_leases.c.holder).where(leader_leases.c.expires_at > utcnow())
        return [r[0] for r in (await conn.execute(q)).all()]


async def test_running_loops_sweep_prune_and_tick(client_factory: ClientFactory) -> None:
    client = await client_factory(run_loops=True, **FAST)
    ctx = ctx_of(client)
    restarted: list[str] = []

    async def restart(ws_id: str) -> None:
        restarted.append(ws_id)

    ctx.restart_hook = restart
    silent = await add_ws(ctx, "online", 120)
    alive = await add_ws(ctx, "online", 1)
    stuck = await add_ws(ctx, "provisioning", 120)
    async with ctx.engine.begin() as conn:
        await conn.execute(
            sa.insert(activity_logs).values(
                id=new_id(),
                workspace_id=alive,
                activity_type="a2a_receive",
                created_at=utcnow() - timedelta(days=30),
            )
        )

    async def swept() -> bool:
        return await status_of(ctx, silent) == "offline" and await status_of(ctx, stuck) == "failed"

    async def pruned() -> bool:
        async with ctx.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(activity_logs))).scalar() == 0

    await eventually(swept, "liveness and provision-timeout sweeps")
    await eventually(pruned, "activity pruning")
    await eventually(lambda: _async(restarted == [silent]), "restart hook")
    assert await status_of(ctx, alive) == "online"
    ticks = ctx.loop_ticks
    assert {"leader-lease", "liveness-sweep", "provision-timeout-sweep", "activity-pruner"} <= set(ticks)
    assert len(await lease_holders(ctx)) == 1


async def test_two_replicas_elect_one_leader_and_hand_over_on_stop(client_factory: ClientFactory) -> None:
    slow_expiry = {**FAST, "LEADER_LEASE_TTL_SECONDS": 600}  # a takeover can only come from the release
    first = await client_factory(run_loops=True, **slow_expiry)
    second = await client_factory(run_loops=True, **slow_expiry)
    ctx1, ctx2 = ctx_of(first), ctx_of(second)
    await eventually(lambda: _async(_ticked(ctx1) and _ticked(ctx2)), "both renewers to run")

    assert len(await lease_holders(ctx1)) == 1
    assert _leads(ctx1) != _leads(ctx2)  # exactly one of the two leads

    leader, follower = (ctx1, ctx2) if _leads(ctx1) else (ctx2, ctx1)
    await leader.loops.stop()
    assert not _leads(leader)
    await eventually(lambda: _async(_leads(follower)), "the follower to take the released lease")
    assert await lease_holders(ctx1) == [follower.loops.lease.holder]


def _leads(ctx: AppContext) -> bool:
    return bool(ctx.loops.lease.held)


def _ticked(ctx: AppContext) -> bool:
    return "leader-lease" in ctx.loop_ticks


async def _async(value: bool) -> bool:
    return value
