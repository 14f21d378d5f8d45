"""Concurrent heartbeats (registry/batch.py): on Postgres they share statements; on both databases every
heartbeat is written, authenticated on its own and answered as if it had been alone."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.registry_support import add_workspace, bearer, ctx_of, mint_token, row
from workspace_server.db.schema import workspace_auth_tokens
from workspace_server.registry import batch

AGENTS = 40


def hb(ws_id: str, uptime: int, **fields: Any) -> dict[str, Any]:
    return {"workspace_id": ws_id, "uptime_seconds": uptime, "current_task": f"task {uptime}", **fields}


class StatementCounter:
    """Counts executions of the batched heartbeat statement (sent on the driver directly, batch.py)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        execute = batch.HeartbeatBatcher._execute

        async def counted(batcher: batch.HeartbeatBatcher, beats: Any) -> Any:
            self.count += 1
            return await execute(batcher, beats)

        monkeypatch.setattr(batch.HeartbeatBatcher, "_execute", counted)


async def test_concurrent_heartbeats_are_each_written_and_authenticated(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ctx_of(client)
    ids = [await add_workspace(ctx, f"agent-{i}", status="online") for i in range(AGENTS)]
    tokens = {ws_id: await mint_token(ctx, ws_id) for ws_id in ids}
    intruder = ids[0]  # beats with another workspace's token: refused, row untouched
    grandfathered = await add_workspace(ctx, "no-token-yet", status="online")  # no token: passes

    counter = StatementCounter(monkeypatch)
    calls = [
        client.post("/registry/heartbeat", json=hb(ws_id, 100 + i), headers=bearer(tokens[ws_id]))
        for i, ws_id in enumerate(ids[1:], start=1)
    ]
    calls.append(client.post("/registry/heartbeat", json=hb(intruder, 7), headers=bearer(tokens[ids[1]])))
    calls.append(client.post("/registry/heartbeat", json=hb(grandfathered, 9)))
    answers = await asyncio.gather(*calls)

    for r in answers[: AGENTS - 1]:
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert (answers[-2].status_code, answers[-2].json()) == (401, {"error": "invalid workspace auth token"})
    assert answers[-1].status_code == 200
    for i, ws_id in enumerate(ids[1:], start=1):
        written = await row(ctx, ws_id)
        assert (written.uptime_seconds, written.current_task) == (100 + i, f"task {100 + i}")
        assert written.last_heartbeat_at is not None
    untouched = await row(ctx, intruder)
    assert untouched.last_heartbeat_at is None
    assert (await row(ctx, grandfathered)).uptime_seconds == 9
    if ctx.engine.dialect.name == "postgresql":
        # they shared statements: fewer executions than heartbeats
        assert 1 <= counter.count < AGENTS


async def test_same_workspace_twice_in_flight_both_written_in_order(client: httpx.AsyncClient) -> None:
    """An UPDATE … FROM writes a row once per statement: the second heartbeat of one workspace waits
    for the next batch instead of being silently dropped."""
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    token = await mint_token(ctx, ws_id)
    first, second = await asyncio.gather(
        client.post("/registry/heartbeat", json=hb(ws_id, 1, active_tasks=1), headers=bearer(token)),
        client.post("/registry/heartbeat", json=hb(ws_id, 2, active_tasks=0), headers=bearer(token)),
    )
    assert (first.status_code, second.status_code) == (200, 200)
    written = await row(ctx, ws_id)
    if ctx.engine.dialect.name == "postgresql":  # the batcher keeps arrival order
        assert (written.uptime_seconds, written.active_tasks) == (2, 0)
        assert written.idle_since is not None  # the later, idle heartbeat was applied last
    else:  # two independent requests: either may land last, but whole
        assert (written.uptime_seconds, written.active_tasks) in ((1, 1), (2, 0))


async def test_batch_marks_token_last_used(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    token = await mint_token(ctx, ws_id)
    r = await client.post("/registry/heartbeat", json=hb(ws_id, 1), headers=bearer(token))
    assert r.status_code == 200
    async with ctx.engine.connect() as conn:
        used = (
            await conn.execute(
                sa.select(workspace_auth_tokens.c.last_used_at).where(
                    workspace_auth_tokens.c.workspace_id == ws_id
                )
            )
        ).scalar_one()
    assert used is not None


async def test_failed_batch_falls_back_to_per_step_path(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement error in the shared batch (here: a broken statement) does not fail the heartbeats in
    it: each is answered by the per-step path, with the same auth rules."""
    ctx = ctx_of(client)
    monkeypatch.setattr(batch, "HEARTBEAT_BATCH_SQL", sa.text("SELECT no_such_column FROM workspaces"))
    ws_id = await add_workspace(ctx, "a", status="online")
    token = await mint_token(ctx, ws_id)
    ok, denied = await asyncio.gather(
        client.post("/registry/heartbeat", json=hb(ws_id, 5), headers=bearer(token)),
        client.post("/registry/heartbeat", json=hb(ws_id, 6), headers=bearer("not-a-token")),
    )
    assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
    assert (denied.status_code, denied.json()) == (401, {"error": "invalid workspace auth token"})
    assert (await row(ctx, ws_id)).uptime_seconds == 5


async def _pool_idle(ctx: Any) -> bool:
    """Whether every connection of the app's pool is back (the batcher returns its own when its queue
    empties, a moment after the last answer); waits up to 5 s (a leak guard, not a timing assertion)."""
    pool = ctx.engine.sync_engine.pool
    for _ in range(500):
        if pool.checkedout() == 0:
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize("broken", [False, True], ids=["ok", "failing-statement"])
async def test_the_batcher_gives_its_connection_back(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, broken: bool
) -> None:
    """The batcher keeps one pooled connection while heartbeats keep coming; once they stop (or a batch
    failed) it is back in the pool."""
    ctx = ctx_of(client)
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("the batcher runs on Postgres only")
    if broken:
        monkeypatch.setattr(batch, "HEARTBEAT_BATCH_SQL", sa.text("SELECT no_such_column FROM workspaces"))
    ids = [await add_workspace(ctx, f"agent-{i}", status="online") for i in range(AGENTS)]
    tokens = {ws_id: await mint_token(ctx, ws_id) for ws_id in ids}
    for uptime in (1, 2, 3):
        answers = await asyncio.gather(
            *(client.post("/registry/heartbeat", json=hb(w, uptime), headers=bearer(tokens[w])) for w in ids)
        )
        assert {r.status_code for r in answers} == {200}
    assert (await row(ctx, ids[-1])).uptime_seconds == 3
    assert await _pool_idle(ctx)
