"""POST /registry/heartbeat (spec 03 §1.3, §6; spec 01 §1.3, §4.4)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.integration.registry_support import (
    Captured,
    add_workspace,
    bearer,
    ctx_of,
    mint_token,
    recorded_events,
    row,
    set_columns,
)
from workspace_server.a2a import store as a2a_store
from workspace_server.common.ids import new_id
from workspace_server.common.kv import liveness_key
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.registry.service import capabilities, idle_timeout_override


def hb(ws_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workspace_id": ws_id,
        "error_rate": 0,
        "sample_error": "",
        "active_tasks": 0,
        "current_task": "",
        "uptime_seconds": 10,
    }
    base.update(fields)
    return base


async def beat(client: httpx.AsyncClient, ws_id: str, **fields: Any) -> httpx.Response:
    r = await client.post("/registry/heartbeat", json=hb(ws_id, **fields))
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    return r


async def test_heartbeat_writes_columns(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    await beat(
        client,
        ws_id,
        error_rate=0.2,
        sample_error="boom",
        active_tasks=2,
        current_task="writing",
        uptime_seconds=77,
    )
    w = await row(ctx, ws_id)
    assert (w.last_error_rate, w.last_sample_error, w.active_tasks, w.current_task, w.uptime_seconds) == (
        0.2,
        "boom",
        2,
        "writing",
        77,
    )
    assert w.last_heartbeat_at is not None and w.status == "online"
    assert await recorded_events(ctx, ws_id) == []


async def test_heartbeat_token_gate(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    other = await add_workspace(ctx, "b", status="online")
    token, other_token = await mint_token(ctx, ws_id), await mint_token(ctx, other)
    r = await client.post("/registry/heartbeat", json=hb(ws_id, active_tasks=3))
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.post("/registry/heartbeat", json=hb(ws_id, active_tasks=3), headers=bearer(other_token))
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    w = await row(ctx, ws_id)
    assert (w.active_tasks, w.last_heartbeat_at) == (0, None)
    r = await client.post("/registry/heartbeat", json=hb(ws_id, active_tasks=3), headers=bearer(token))
    assert r.status_code == 200
    assert (await row(ctx, ws_id)).active_tasks == 3


@pytest.mark.parametrize(
    ("fields", "degraded_payload"),
    [
        ({"error_rate": 0.5, "sample_error": "e"}, {"error_rate": 0.5, "sample_error": "e"}),
        ({"error_rate": 1, "sample_error": "e"}, {"error_rate": 1, "sample_error": "e"}),
        (
            {"runtime_state": "wedged", "sample_error": "stuck"},
            {"runtime_state": "wedged", "sample_error": "stuck"},
        ),
        (
            {"runtime_state": "wedged", "error_rate": 0.9, "sample_error": "x"},
            {"runtime_state": "wedged", "sample_error": "x"},
        ),
    ],
)
async def test_online_degrades(
    client: httpx.AsyncClient, fields: dict[str, Any], degraded_payload: dict[str, Any]
) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    await beat(client, ws_id, **fields)
    assert (await row(ctx, ws_id)).status == "degraded"
    # one event per actual change: the second rule loses the compare-and-set and stays silent
    assert await recorded_events(ctx, ws_id) == [("WORKSPACE_DEGRADED", degraded_payload)]


async def test_error_rate_just_below_threshold_stays_online(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    await beat(client, ws_id, error_rate=0.49)
    assert (await row(ctx, ws_id)).status == "online"
    assert await recorded_events(ctx, ws_id) == []


@pytest.mark.parametrize(
    ("fields", "recovers"),
    [
        ({"error_rate": 0.05}, True),
        ({"error_rate": 0}, True),
        ({"error_rate": 0.1}, False),
        ({"error_rate": 0, "runtime_state": "wedged"}, False),
    ],
)
async def test_degraded_recovery(client: httpx.AsyncClient, fields: dict[str, Any], recovers: bool) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="degraded")
    before = (await row(ctx, ws_id)).updated_at
    await beat(client, ws_id, **fields)
    w = await row(ctx, ws_id)
    if recovers:
        assert w.status == "online"
        assert await recorded_events(ctx, ws_id) == [("WORKSPACE_ONLINE", {})]
    else:
        assert w.status == "degraded"
        assert await recorded_events(ctx, ws_id) == []
        assert w.updated_at >= before


@pytest.mark.parametrize(
    ("status", "payload"),
    [("offline", {}), ("provisioning", {"recovered_from": "provisioning"})],
)
async def test_heartbeat_revives(client: httpx.AsyncClient, status: str, payload: dict[str, Any]) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status=status)
    await beat(client, ws_id)
    assert (await row(ctx, ws_id)).status == "online"
    assert await recorded_events(ctx, ws_id) == [("WORKSPACE_ONLINE", payload)]


@pytest.mark.parametrize("status", ["failed", "paused", "hibernated", "hibernating", "awaiting_agent"])
async def test_heartbeat_leaves_other_statuses(client: httpx.AsyncClient, status: str) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status=status)
    await beat(client, ws_id, error_rate=0.9, runtime_state="wedged")
    w = await row(ctx, ws_id)
    assert w.status == status and w.last_heartbeat_at is not None
    assert await recorded_events(ctx, ws_id) == []


async def test_status_mgmt_capability_from_previous_heartbeat(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    caps = {"runtime_metadata": {"capabilities": {"status_mgmt": True}, "idle_timeout_seconds": 900}}
    # first heartbeat: nothing cached yet, so its own declaration does not apply
    await beat(client, ws_id, error_rate=0.9, **caps)
    assert (await row(ctx, ws_id)).status == "degraded"
    assert capabilities(ctx, ws_id) == {"status_mgmt": True}
    assert idle_timeout_override(ctx, ws_id) == 900
    # now cached: the adapter manages status, so error rates neither recover nor degrade
    await beat(client, ws_id, error_rate=0, **caps)
    assert (await row(ctx, ws_id)).status == "degraded"
    await set_columns(ctx, ws_id, status="online")
    await beat(client, ws_id, error_rate=0.9, **caps)
    assert (await row(ctx, ws_id)).status == "online"
    # wedged is always honoured
    await beat(client, ws_id, runtime_state="wedged")
    assert (await row(ctx, ws_id)).status == "degraded"
    # metadata absent → overrides cleared
    assert capabilities(ctx, ws_id) == {} and idle_timeout_override(ctx, ws_id) is None


@pytest.mark.parametrize(
    ("reported", "stored"),
    [(-1, 500), (0, 500), (7, 7), (10**12, 10**12), (10**12 + 1, 10**12), (2**63 - 1, 10**12)],
)
async def test_monthly_spend_clamp(client: httpx.AsyncClient, reported: int, stored: int) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online", monthly_spend=500)
    await beat(client, ws_id, monthly_spend=reported)
    assert (await row(ctx, ws_id)).monthly_spend == stored


async def test_removed_and_unknown_ids_are_200_and_untouched(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    seen = Captured(ctx)
    gone = await add_workspace(ctx, "gone", status="removed")
    await beat(client, gone, active_tasks=4, current_task="t")
    w = await row(ctx, gone)
    assert (w.status, w.active_tasks, w.last_heartbeat_at) == ("removed", 0, None)
    unknown = new_id()
    await beat(client, unknown, runtime_metadata={"capabilities": {"session": True}})
    assert await row(ctx, unknown) is None
    assert seen.events == []
    assert await recorded_events(ctx) == []
    assert unknown not in ctx.runtime_overrides


async def test_task_updated_only_on_change_and_heartbeat_always(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    seen = Captured(ctx)
    await beat(client, ws_id, current_task="build", active_tasks=1, uptime_seconds=5)
    await beat(client, ws_id, current_task="build", active_tasks=1, uptime_seconds=35)
    await beat(client, ws_id, current_task="", active_tasks=0, uptime_seconds=65)
    assert seen.of("TASK_UPDATED") == [
        {"current_task": "build", "active_tasks": 1},
        {"current_task": "", "active_tasks": 0},
    ]
    assert seen.of("WORKSPACE_HEARTBEAT") == [
        {"active_tasks": 1, "uptime_seconds": 5},
        {"active_tasks": 1, "uptime_seconds": 35},
        {"active_tasks": 0, "uptime_seconds": 65},
    ]
    assert await recorded_events(ctx, ws_id) == []  # broadcast-only


async def test_idle_since_tracks_idleness(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    await beat(client, ws_id, active_tasks=0)
    first = (await row(ctx, ws_id)).idle_since
    assert first is not None
    await beat(client, ws_id, active_tasks=0)
    assert (await row(ctx, ws_id)).idle_since == first
    await beat(client, ws_id, active_tasks=1)
    assert (await row(ctx, ws_id)).idle_since is None
    await beat(client, ws_id, active_tasks=0)
    assert (await row(ctx, ws_id)).idle_since is not None


async def test_liveness_key_extended_never_created(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    await beat(client, ws_id)
    assert await ctx.kv.get(liveness_key(ws_id)) is None
    await ctx.kv.set(liveness_key(ws_id), "online", 180)
    await beat(client, ws_id)
    assert await ctx.kv.get(liveness_key(ws_id)) == "online"


async def _queue_item(ctx: Any, ws_id: str) -> None:
    async with ctx.engine.begin() as conn:
        await a2a_store.enqueue(
            conn,
            ws_id=ws_id,
            caller_id=None,
            body={"jsonrpc": "2.0"},
            method="message/send",
            key=None,
            now=utcnow(),
        )


def _record_drains(ctx: Any) -> tuple[list[str], asyncio.Event]:
    drained: list[str] = []
    done = asyncio.Event()

    async def drain(wid: str) -> None:
        drained.append(wid)
        done.set()

    ctx.queue_drain = drain
    return drained, done


async def test_queue_drain_hook_runs_when_capacity_frees(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online", max_concurrent_tasks=2)
    await _queue_item(ctx, ws_id)
    drained, done = _record_drains(ctx)
    await beat(client, ws_id, active_tasks=2)
    assert drained == []
    await beat(client, ws_id, active_tasks=1)
    await asyncio.wait_for(done.wait(), timeout=30)  # deadlock guard, not a timing assertion
    assert drained == [ws_id]


async def test_drain_skipped_when_postgres_saw_an_empty_queue(client: httpx.AsyncClient) -> None:
    """Postgres answers "anything queued?" in the heartbeat's own statement, so an idle agent with an
    empty queue costs no drain; SQLite leaves that probe to the drain itself."""
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    drained, done = _record_drains(ctx)
    await beat(client, ws_id, active_tasks=0)
    if ctx.engine.dialect.name == "postgresql":
        await asyncio.sleep(0.05)  # a scheduled drain would have started by now
        assert drained == []
    else:
        await asyncio.wait_for(done.wait(), timeout=30)
        assert drained == [ws_id]


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"error_rate":0}',
        b'{"workspace_id":""}',
        b'{"workspace_id":"not-a-uuid"}',
        b'{"workspace_id":"%(id)s","error_rate":NaN}',
        b'{"workspace_id":"%(id)s","active_tasks":"many"}',
        b'{"workspace_id":"%(id)s","active_tasks":99999999999}',
    ],
)
async def test_heartbeat_bad_bodies(client: httpx.AsyncClient, body: bytes) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    r = await client.post(
        "/registry/heartbeat",
        content=body.replace(b"%(id)s", ws_id.encode()),
        headers={"Content-Type": "application/json"},
    )
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    assert (await row(ctx, ws_id)).last_heartbeat_at is None


async def test_heartbeat_nulls_are_zero_values(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    r = await client.post(
        "/registry/heartbeat",
        json={"workspace_id": ws_id, "current_task": None, "error_rate": None, "runtime_metadata": None},
    )
    assert r.status_code == 200
    assert (await row(ctx, ws_id)).current_task == ""


async def test_liveness_refresh_on_redis(client_factory: Any, redis_url: str) -> None:
    client = await client_factory(REDIS_URL=redis_url)
    ctx = ctx_of(client)
    ws_id = new_id()
    r = await client.post(
        "/registry/register", json={"id": ws_id, "url": "http://localhost:9000", "agent_card": {}}
    )
    assert r.status_code == 200
    key = liveness_key(ws_id)
    assert await ctx.redis.get(key) == b"online"
    await ctx.redis.expire(key, 5)
    await client.post("/registry/heartbeat", json=hb(ws_id), headers=bearer(r.json()["auth_token"]))
    assert await ctx.redis.ttl(key) > 5  # extended back to the 180 s liveness TTL
    await ctx.redis.delete(key)
    await client.post("/registry/heartbeat", json=hb(ws_id), headers=bearer(r.json()["auth_token"]))
    assert await ctx.redis.exists(key) == 0  # EXPIRE never re-creates the key


async def test_heartbeat_events_carry_the_moment_written(client: httpx.AsyncClient) -> None:
    """WORKSPACE_HEARTBEAT and TASK_UPDATED are stamped with the last_heartbeat_at the heartbeat wrote
    (on Postgres the batch's moment, rendered once for all its heartbeats), not a later clock reading."""
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "a", status="online")
    seen = Captured(ctx)
    await beat(client, ws_id, current_task="build", active_tasks=1, uptime_seconds=5)
    written = rfc3339((await row(ctx, ws_id)).last_heartbeat_at)
    stamps = {e.event: e.timestamp for e in seen.events}
    assert stamps == {"TASK_UPDATED": written, "WORKSPACE_HEARTBEAT": written}
