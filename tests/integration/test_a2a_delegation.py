"""Delegation (spec 04 §2): delegate, idempotency, retry rules, queue hand-off, record, update, list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory, free_port
from tests.integration.a2a_support import StubAgent, activity, drained, heartbeat, queue_rows, wait_for
from tests.integration.registry_support import add_workspace, ctx_of, recorded_events, set_columns
from workspace_server.a2a import delegation
from workspace_server.context import AppContext
from workspace_server.db.schema import activity_logs


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delegation, "RETRY_DELAY_SECONDS", 0.0)


async def setup(
    client_factory: ClientFactory, agent: StubAgent
) -> tuple[httpx.AsyncClient, AppContext, str, str]:
    client = await client_factory(MOLECULE_ENV="development")
    ctx = ctx_of(client)
    source = await add_workspace(ctx, "PM", status="online")
    target = await add_workspace(ctx, "Dev", status="online", url=agent.url)
    return client, ctx, source, target


async def delegate_rows(ctx: AppContext, ws_id: str) -> list[Any]:
    return [r for r in await activity(ctx, ws_id, "delegation") if r.method == "delegate"]


async def result_rows(ctx: AppContext, ws_id: str) -> list[Any]:
    return [r for r in await activity(ctx, ws_id, "delegation") if r.method == "delegate_result"]


async def settled(ctx: AppContext, ws_id: str, status: str) -> Any:
    async def check() -> Any:
        rows = await delegate_rows(ctx, ws_id)
        return rows if rows and all(r.status == status for r in rows) else None

    return await wait_for(check, f"delegation {status}")


async def test_delegate_completes(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, source, target = await setup(client_factory, agent)
    r = await client.post(f"/workspaces/{source}/delegate", json={"target_id": target, "task": "write tests"})
    assert r.status_code == 202
    delegation_id = r.json()["delegation_id"]
    assert r.json() == {"delegation_id": delegation_id, "status": "delegated", "target_id": target}
    (row,) = await settled(ctx, source, "completed")
    assert row.request_body == {"task": "write tests", "delegation_id": delegation_id}
    assert row.summary == f"Delegating to {target}" and row.target_id == target
    (result,) = await result_rows(ctx, source)
    assert result.status == "completed" and result.summary == "Delegation completed (echo: write tests)"
    assert result.response_body == {"text": "echo: write tests", "delegation_id": delegation_id}
    # the A2A message carries the delegation id as messageId and metadata
    (sent,) = agent.received
    assert sent["params"]["message"]["messageId"] == delegation_id
    assert sent["params"]["message"]["metadata"] == {"delegation_id": delegation_id}
    events = [e for e, _ in await recorded_events(ctx, source)]
    assert events == ["DELEGATION_SENT", "DELEGATION_STATUS", "DELEGATION_COMPLETE"]

    listed = (await client.get(f"/workspaces/{source}/delegations")).json()
    assert [(x["type"], x["status"], x["delegation_id"]) for x in listed] == [
        ("delegation", "completed", delegation_id),
        ("delegation", "completed", delegation_id),
    ]
    by_summary = {x["summary"]: x for x in listed}
    assert by_summary["Delegation completed (echo: write tests)"]["response_preview"] == "echo: write tests"
    assert set(listed[0]) >= {"id", "source_id", "target_id", "created_at"}


async def test_idempotency_key(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, source, target = await setup(client_factory, agent)
    body = {"target_id": target, "task": "once", "idempotency_key": "k-1"}
    first = await client.post(f"/workspaces/{source}/delegate", json=body)
    assert first.status_code == 202
    second = await client.post(f"/workspaces/{source}/delegate", json=body)
    assert second.status_code == 200
    delegation_id = first.json()["delegation_id"]
    assert second.json()["delegation_id"] == delegation_id and second.json()["idempotent_hit"] is True
    assert second.json()["target_id"] == target
    await settled(ctx, source, "completed")
    assert agent.processed == [delegation_id]
    # a failed delegation releases its key
    async with ctx.engine.begin() as conn:
        await conn.execute(
            sa.update(activity_logs).where(activity_logs.c.idempotency_key == "k-1").values(status="failed")
        )
    third = await client.post(f"/workspaces/{source}/delegate", json=body)
    assert third.status_code == 202 and third.json()["delegation_id"] != delegation_id
    # another workspace may use the same key
    other = await add_workspace(ctx, "other", status="online")
    r = await client.post(f"/workspaces/{other}/delegate", json=body)
    assert r.status_code == 202


async def test_validation(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, _ctx, source, target = await setup(client_factory, agent)
    cases = [
        ({"target_id": target}, "invalid delegation request"),
        ({"task": "x"}, "invalid delegation request"),
        ({"target_id": target, "task": ""}, "invalid delegation request"),
        ({"target_id": 5, "task": "x"}, "invalid delegation request"),
        ({"target_id": "nope", "task": "x"}, "target_id must be a valid UUID"),
        ({"target_id": source, "task": "x"}, "self-delegation not permitted"),
    ]
    for body, error in cases:
        r = await client.post(f"/workspaces/{source}/delegate", json=body)
        assert (r.status_code, r.json()) == (400, {"error": error}), body
    r = await client.post(f"/workspaces/{source}/delegate", content=b"{")
    assert (r.status_code, r.json()) == (400, {"error": "invalid delegation request"})
    assert agent.received == []


async def test_unreachable_target_is_retried_once_then_fails(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, source, target = await setup(client_factory, agent)
    await set_columns(ctx, target, url=f"http://127.0.0.1:{free_port()}")
    r = await client.post(f"/workspaces/{source}/delegate", json={"target_id": target, "task": "x"})
    delegation_id = r.json()["delegation_id"]
    (row,) = await settled(ctx, source, "failed")
    assert row.error_detail == "failed to reach workspace agent"
    (result,) = await result_rows(ctx, source)
    assert (result.status, result.summary, result.error_detail) == (
        "failed",
        "Delegation failed",
        "failed to reach workspace agent",
    )
    # two attempts reached the proxy (one retry), each logged on the target
    assert len(await wait_for(lambda: _at_least(ctx, target, 2), "two failure rows")) == 2
    failed = [p for e, p in await recorded_events(ctx, source) if e == "DELEGATION_FAILED"]
    assert failed == [
        {"delegation_id": delegation_id, "error": "failed to reach workspace agent", "target_id": target}
    ]
    listed = (await client.get(f"/workspaces/{source}/delegations")).json()
    assert {x["delegation_id"] for x in listed} == {delegation_id}
    assert all(x["error"] == "failed to reach workspace agent" for x in listed)


async def _at_least(ctx: AppContext, ws_id: str, n: int) -> list[Any] | None:
    rows = await activity(ctx, ws_id)
    return rows if len(rows) >= n else None


async def test_hierarchy_denial_fails_without_retry(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, source, target = await setup(client_factory, agent)
    # child of PM -> child of Dev: cousins, not allowed (spec 03 §2)
    nephew = await add_workspace(ctx, "nephew", status="online", parent_id=target, url=agent.url)
    child = await add_workspace(ctx, "child", status="online", parent_id=source)
    r = await client.post(f"/workspaces/{child}/delegate", json={"target_id": nephew, "task": "x"})
    assert r.status_code == 202
    (row,) = await settled(ctx, child, "failed")
    assert row.error_detail == "access denied: workspaces cannot communicate per hierarchy rules"
    assert agent.received == []


async def _has(found: Any, item: str) -> bool:
    return item in await found


async def test_busy_target_queues_then_completes_via_drain(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, source, target = await setup(client_factory, agent)
    agent.mode = "busy"
    r = await client.post(f"/workspaces/{source}/delegate", json={"target_id": target, "task": "later"})
    delegation_id = r.json()["delegation_id"]
    await settled(ctx, source, "queued")
    (result,) = await wait_for(lambda: result_rows(ctx, source), "queued result")
    assert (result.status, result.summary) == ("queued", "Delegation queued — target at capacity")
    assert result.response_body == {"delegation_id": delegation_id, "queued": True}
    # never retried on busy: one attempt, one queue row
    assert len(agent.received) == 1 and len(await queue_rows(ctx, target)) == 1

    async def statuses() -> list[str]:
        return [p["status"] for e, p in await recorded_events(ctx, source) if e == "DELEGATION_STATUS"]

    # the event is recorded after the result row: wait for it rather than race it
    await wait_for(lambda: _has(statuses(), "queued"), "the queued status event")
    assert await statuses() == ["dispatched", "queued"]

    agent.mode = "echo"
    await heartbeat(client, target)
    await drained(ctx)
    (row,) = await settled(ctx, source, "completed")
    assert row.error_detail is None
    (result,) = await result_rows(ctx, source)
    assert result.status == "completed" and result.response_body == {
        "text": "echo: later",
        "delegation_id": delegation_id,
    }
    complete = [p for e, p in await recorded_events(ctx, source) if e == "DELEGATION_COMPLETE"]
    assert complete == [
        {
            "delegation_id": delegation_id,
            "response_preview": "echo: later",
            "target_id": target,
            "via": "queue_drain",
        }
    ]
    assert agent.processed == [delegation_id]


async def test_jsonrpc_error_reply_fails_the_delegation(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx, source, target = await setup(client_factory, agent)
    agent.mode, agent.body = (
        "status",
        b'{"jsonrpc":"2.0","id":"1","error":{"code":-32601,"message":"Method not found"}}',
    )
    await client.post(f"/workspaces/{source}/delegate", json={"target_id": target, "task": "x"})
    (row,) = await settled(ctx, source, "failed")
    assert row.error_detail == "Method not found"


async def test_record_and_update(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx, source, target = await setup(client_factory, agent)
    r = await client.post(
        f"/workspaces/{source}/delegations/record",
        json={"target_id": target, "task": "direct", "delegation_id": "task-1"},
    )
    assert (r.status_code, r.json()) == (202, {"delegation_id": "task-1", "status": "recorded"})
    (row,) = await delegate_rows(ctx, source)
    assert (row.status, row.idempotency_key) == ("dispatched", None)
    r = await client.post(
        f"/workspaces/{source}/delegations/record", json={"target_id": "x", "task": "t", "delegation_id": "d"}
    )
    assert (r.status_code, r.json()) == (400, {"error": "target_id must be a valid UUID"})
    r = await client.post(f"/workspaces/{source}/delegations/record", json={"task": "t"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})

    r = await client.post(f"/workspaces/{source}/delegations/task-1/update", json={"status": "done"})
    assert (r.status_code, r.json()) == (400, {"error": "status must be 'completed' or 'failed'"})
    r = await client.post(
        f"/workspaces/{source}/delegations/task-1/update",
        json={"status": "completed", "response_preview": "all good"},
    )
    assert (r.status_code, r.json()) == (200, {"delegation_id": "task-1", "status": "completed"})
    (row,) = await delegate_rows(ctx, source)
    assert row.status == "completed"
    (result,) = await result_rows(ctx, source)
    assert (result.summary, result.target_id) == ("Delegation completed (all good)", None)
    events = [(e, p) for e, p in await recorded_events(ctx, source)]
    assert events[-1] == ("DELEGATION_COMPLETE", {"delegation_id": "task-1", "response_preview": "all good"})

    await client.post(
        f"/workspaces/{source}/delegations/record",
        json={"target_id": target, "task": "direct", "delegation_id": "task-2"},
    )
    r = await client.post(
        f"/workspaces/{source}/delegations/task-2/update", json={"status": "failed", "error": "boom"}
    )
    assert r.json() == {"delegation_id": "task-2", "status": "failed"}
    rows = {r.request_body["delegation_id"]: r for r in await delegate_rows(ctx, source)}
    assert (rows["task-2"].status, rows["task-2"].error_detail) == ("failed", "boom")
    assert (await recorded_events(ctx, source))[-1] == (
        "DELEGATION_FAILED",
        {"delegation_id": "task-2", "error": "boom"},
    )


async def test_list_is_empty_array_and_needs_auth(client_factory: ClientFactory) -> None:
    client = await client_factory()
    ctx = ctx_of(client)
    ws = await add_workspace(ctx, "w", status="online")
    r = await client.get(f"/workspaces/{ws}/delegations")
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    client = await client_factory(MOLECULE_ENV="development")
    r = await client.get(f"/workspaces/{ws}/delegations")
    assert (r.status_code, r.json()) == (200, [])
