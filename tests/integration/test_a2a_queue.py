"""The A2A queue (spec 04 §1.7, §7, §8): busy → 202 queued, drained on heartbeats, delivered exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory
from tests.integration.a2a_support import (
    StubAgent,
    activity,
    drained,
    heartbeat,
    message,
    queue_rows,
    wait_for,
)
from tests.integration.registry_support import Captured, add_workspace, ctx_of
from workspace_server.a2a import queue, store
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.db.schema import a2a_queue

BUSY_MESSAGE = "workspace agent busy — request queued, will dispatch when capacity available"


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


async def setup(client_factory: ClientFactory, agent: StubAgent) -> tuple[httpx.AsyncClient, AppContext, str]:
    client = await client_factory(MOLECULE_ENV="development")
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "Busy Agent", status="online", url=agent.url)
    return client, ctx, target


async def beat_and_drain(client: httpx.AsyncClient, ws_id: str, active_tasks: int = 0) -> None:
    await heartbeat(client, ws_id, active_tasks)
    await drained(client.app.state.ctx)  # type: ignore[attr-defined]


async def test_busy_message_is_queued_and_delivered_once(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, target = await setup(client_factory, agent)
    events = Captured(ctx)
    agent.mode = "busy"
    r = await client.post(f"/workspaces/{target}/a2a", json=message("do it", "msg-1"))
    assert r.status_code == 202
    body = r.json()
    assert body == {"message": BUSY_MESSAGE, "queue_depth": 1, "queue_id": body["queue_id"], "queued": True}
    (item,) = await queue_rows(ctx, target)
    assert (item.id, item.status, item.idempotency_key, item.attempts) == (
        body["queue_id"],
        "queued",
        "msg-1",
        0,
    )
    assert item.caller_id is None and item.method == "message/send"
    assert agent.processed == []

    # still busy by its own account: no drain
    await beat_and_drain(client, target, active_tasks=1)
    assert (await queue_rows(ctx, target))[0].status == "queued"
    assert len(agent.received) == 1

    agent.mode = "echo"
    await beat_and_drain(client, target)
    (item,) = await queue_rows(ctx, target)
    assert (item.status, item.attempts) == ("completed", 1) and item.completed_at is not None
    assert agent.processed == ["msg-1"]
    # the delivery is logged like a live call, and the canvas gets the reply it was promised
    rows = await wait_for(lambda: activity(ctx, target), "delivery row")
    assert [(x.status, x.response_body is not None) for x in rows] == [("ok", True)]
    await wait_for(lambda: _value(events.of("A2A_RESPONSE")), "A2A_RESPONSE")

    # more heartbeats deliver nothing more
    await beat_and_drain(client, target)
    await beat_and_drain(client, target)
    assert agent.processed == ["msg-1"]


async def _value(v: Any) -> Any:
    return v


async def test_item_meeting_busy_target_again_stays_queued(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, target = await setup(client_factory, agent)
    agent.mode = "busy"
    r = await client.post(f"/workspaces/{target}/a2a", json=message("again", "msg-2"))
    assert r.status_code == 202
    await beat_and_drain(client, target)  # agent claims capacity but drops the request again
    (item,) = await queue_rows(ctx, target)
    assert (item.status, item.attempts, item.dispatched_at) == ("queued", 1, None)
    assert "busy" in item.last_error
    assert agent.processed == []
    assert len(agent.received) == 2
    agent.mode = "echo"
    await beat_and_drain(client, target)
    (item,) = await queue_rows(ctx, target)
    assert (item.status, item.attempts) == ("completed", 2)
    assert agent.processed == ["msg-2"]


async def test_resent_message_is_not_delivered_twice(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, target = await setup(client_factory, agent)
    agent.mode = "busy"
    first = await client.post(f"/workspaces/{target}/a2a", json=message("once", "msg-3"))
    assert first.status_code == 202
    agent.mode = "echo"
    # the caller retries the same message while it waits in the queue: answered from the queue
    again = await client.post(f"/workspaces/{target}/a2a", json=message("once", "msg-3"))
    assert again.status_code == 202 and again.json()["queue_id"] == first.json()["queue_id"]
    assert agent.processed == []
    await beat_and_drain(client, target)
    assert agent.processed == ["msg-3"]
    assert [x.status for x in await queue_rows(ctx, target)] == ["completed"]


async def test_busy_twice_with_same_message_id_keeps_one_row(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, target = await setup(client_factory, agent)
    agent.mode = "busy"
    ids = set()
    for _ in range(2):
        r = await client.post(
            f"/workspaces/{target}/a2a",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "message/send",
                "params": {"message": {"messageId": "k"}},
            },
        )
        ids.add(r.json()["queue_id"])
    assert len(ids) == 1 and len(await queue_rows(ctx, target)) == 1


async def test_stuck_dispatched_item_is_reclaimed(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, target = await setup(client_factory, agent)
    body = {
        "jsonrpc": "2.0",
        "id": "1",
        "method": "message/send",
        "params": {
            "message": {"role": "user", "messageId": "msg-stuck", "parts": [{"kind": "text", "text": "x"}]}
        },
    }
    long_ago = utcnow() - timedelta(seconds=queue.LEASE_SECONDS * 3)
    fresh = utcnow()
    async with ctx.engine.begin() as conn:
        for key, dispatched_at in (("msg-stuck", long_ago), ("msg-live", fresh)):
            await conn.execute(
                sa.insert(a2a_queue).values(
                    id=new_id(),
                    workspace_id=target,
                    body={**body, "params": {"message": {**body["params"]["message"], "messageId": key}}},
                    method="message/send",
                    idempotency_key=key,
                    enqueued_at=long_ago,
                    dispatched_at=dispatched_at,
                    attempts=1,
                    status="dispatched",
                )
            )
    await beat_and_drain(client, target)
    by_key = {x.idempotency_key: x for x in await queue_rows(ctx, target)}
    assert (by_key["msg-stuck"].status, by_key["msg-stuck"].attempts) == ("completed", 2)
    # a dispatch whose lease is still fresh is someone else's: left alone
    assert by_key["msg-live"].status == "dispatched"
    assert agent.processed == ["msg-stuck"]


async def test_attempts_are_capped(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, target = await setup(client_factory, agent)
    agent.mode = "busy"
    assert (await client.post(f"/workspaces/{target}/a2a", json=message("x", "msg-5"))).status_code == 202
    for _ in range(queue.MAX_ATTEMPTS):
        await beat_and_drain(client, target)
    (item,) = await queue_rows(ctx, target)
    assert (item.status, item.attempts) == ("failed", queue.MAX_ATTEMPTS)
    await beat_and_drain(client, target)
    assert len(agent.received) == 1 + queue.MAX_ATTEMPTS
    assert agent.processed == []


async def test_idle_timeout_during_drain_fails_without_resend(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client = await client_factory(MOLECULE_ENV="development", A2A_IDLE_TIMEOUT_SECONDS=1)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    agent.mode = "busy"
    assert (await client.post(f"/workspaces/{target}/a2a", json=message("x", "msg-q"))).status_code == 202
    agent.mode = "hang"
    await beat_and_drain(client, target)
    (item,) = await queue_rows(ctx, target)
    assert item.status == "failed" and item.last_error.startswith("delivery unknown")
    agent.release.set()
    await beat_and_drain(client, target)
    assert len(agent.received) == 2


async def test_claim_is_exclusive(client_factory: ClientFactory, agent: StubAgent) -> None:
    _client, ctx, target = await setup(client_factory, agent)
    async with ctx.engine.begin() as conn:
        await store.enqueue(
            conn, ws_id=target, caller_id=None, body={"x": 1}, method=None, key="only", now=utcnow()
        )

    async def claim() -> Any:
        async with ctx.engine.begin() as conn:
            return await store.claim_next(conn, target, utcnow())

    results = await asyncio.gather(*(claim() for _ in range(5)))
    assert len([r for r in results if r is not None]) == 1


async def test_drop_stale(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, target = await setup(client_factory, agent)
    other = await add_workspace(ctx, "other", status="online")
    now = utcnow()
    async with ctx.engine.begin() as conn:
        for ws, age, key in ((target, 90, "old"), (target, 5, "young"), (other, 90, "old-other")):
            await conn.execute(
                sa.insert(a2a_queue).values(
                    id=new_id(),
                    workspace_id=ws,
                    body={},
                    idempotency_key=key,
                    enqueued_at=now - timedelta(minutes=age),
                )
            )
    for bad in ("0", "-1", "abc", "1.5", ""):
        r = await client.post(f"/admin/a2a-queue/drop-stale?max_age_minutes={bad}")
        assert (r.status_code, r.json()) == (400, {"error": "max_age_minutes must be a positive integer"})
    r = await client.post(f"/admin/a2a-queue/drop-stale?workspace_id={target}")
    assert (r.status_code, r.json()) == (200, {"dropped": 1})
    status = {x.idempotency_key: (x.status, x.last_error) for x in await queue_rows(ctx)}
    assert status["old"] == ("dropped", "dropped by operator: stale queued item")
    assert status["young"][0] == "queued" and status["old-other"][0] == "queued"
    r = await client.post("/admin/a2a-queue/drop-stale?max_age_minutes=30")
    assert r.json() == {"dropped": 1}


async def test_drop_stale_needs_admin(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN="secret")
    r = await client.post("/admin/a2a-queue/drop-stale")
    assert r.status_code == 401
    r = await client.post("/admin/a2a-queue/drop-stale", headers={"Authorization": "Bearer secret"})
    assert (r.status_code, r.json()) == (200, {"dropped": 0})


async def test_native_session_busy_is_503_not_queued(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, target = await setup(client_factory, agent)
    ctx.runtime_overrides[target] = {"capabilities": {"session": True}, "idle_timeout_seconds": None}
    agent.mode = "busy"
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert r.json() == {
        "busy": True,
        "error": "workspace agent busy — adapter handles retry (native_session)",
        "native_session": True,
        "retry_after": 30,
    }
    assert await queue_rows(ctx) == []
