"""`GET /events[/:id]` and the SSE streams (spec 04 §3), on SQLite and Postgres."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from workspace_server.common.ids import new_id
from workspace_server.db.engine import make_engine
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
WAIT = 15  # a guard against hanging, never an assertion about speed


async def test_events_list_is_admin_only_newest_first(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx
    a, b = new_id(), new_id()
    await ctx.events.record("WORKSPACE_PROVISIONING", a, {"name": "A", "tier": 1, "runtime": "x"})
    await ctx.events.record("WORKSPACE_ONLINE", b, {"url": "http://b"})
    await ctx.events.record("WORKSPACE_OFFLINE", a, {})
    await ctx.events.broadcast("WORKSPACE_HEARTBEAT", a, {"active_tasks": 0})  # not persisted

    r = await client.get("/events")
    assert r.status_code == 401
    assert r.json() == {"error": "admin auth required"}

    r = await client.get("/events", headers=ADMIN_H)
    assert r.status_code == 200
    events = r.json()
    assert [e["event_type"] for e in events] == [
        "WORKSPACE_OFFLINE",
        "WORKSPACE_ONLINE",
        "WORKSPACE_PROVISIONING",
    ]
    for e in events:
        assert list(e) == ["created_at", "event_type", "id", "payload", "workspace_id"]
        assert e["created_at"].endswith("Z")
    assert events[1] == {**events[1], "workspace_id": b, "payload": {"url": "http://b"}}

    r = await client.get(f"/events/{a}", headers=ADMIN_H)
    assert r.status_code == 200
    assert [(e["event_type"], e["workspace_id"]) for e in r.json()] == [
        ("WORKSPACE_OFFLINE", a),
        ("WORKSPACE_PROVISIONING", a),
    ]
    r = await client.get("/events/not-a-uuid", headers=ADMIN_H)
    assert r.status_code == 200
    assert r.json() == []


async def test_events_list_is_capped_at_100(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx
    ws = new_id()
    for i in range(105):
        await ctx.events.record("CRON_EXECUTED", ws, {"i": i})
    r = await client.get("/events", headers=ADMIN_H)
    assert len(r.json()) == 100
    r = await client.get(f"/events/{ws}", headers=ADMIN_H)
    assert len(r.json()) == 100


async def test_workspace_stream_auth_and_404(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    missing = new_id()
    r = await client.get(f"/workspaces/{missing}/events/stream")
    assert r.status_code == 401
    assert r.json() == {"error": "missing workspace auth token"}
    r = await client.get(f"/workspaces/{missing}/events/stream", headers=ADMIN_H)
    assert r.status_code == 404
    assert r.json() == {"error": "workspace not found"}
    r = await client.get("/events/stream")
    assert r.status_code == 401  # the admin stream is not the `/events/:workspaceId` route
    assert r.json() == {"error": "admin auth required"}


class SSEReader:
    """Splits a raw byte stream into SSE blocks exactly as sent (each ends with a blank line)."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self._buf = b""

    async def next_block(self) -> bytes:
        while b"\n\n" not in self._buf:
            self._buf += await asyncio.wait_for(self._chunks.__anext__(), WAIT)
        block, self._buf = self._buf.split(b"\n\n", 1)
        return block


async def _seed(db_url: str, *names: str) -> list[str]:
    engine = make_engine(db_url)
    ids = []
    try:
        async with engine.begin() as conn:
            for name in names:
                ws_id = new_id()
                await insert_workspace(conn, id=ws_id, name=name, status="online")
                ids.append(ws_id)
    finally:
        await engine.dispose()
    return ids


async def test_workspace_stream_sends_only_its_events(live_server_factory: Any, db_url: str) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    mine, other = await _seed(db_url, "mine", "other")
    async with httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http:
        async with http.stream("GET", f"/workspaces/{mine}/events/stream", headers=ADMIN_H) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream"
            assert resp.headers["cache-control"] == "no-cache"
            assert resp.headers["connection"] == "keep-alive"
            assert resp.headers["x-accel-buffering"] == "no"
            reader = SSEReader(resp)
            assert await reader.next_block() == b": ping"

            for ws_id in (other, mine):
                r = await http.post(
                    f"/workspaces/{ws_id}/notify", json={"message": f"to {ws_id}"}, headers=ADMIN_H
                )
                assert r.status_code == 200
            block = await reader.next_block()  # the other workspace's event was never queued
            assert block.startswith(b"data: ") and b"\n" not in block
            frame = json.loads(block[len(b"data: ") :])
            assert list(frame) == ["type", "timestamp", "data"]
            assert frame["type"] == "AGENT_MESSAGE"
            assert isinstance(frame["timestamp"], int) and frame["timestamp"] > 1_600_000_000_000
            assert frame["data"] == {"message": f"to {mine}", "workspace_id": mine, "name": "mine"}


async def test_admin_stream_sends_every_workspace(live_server_factory: Any, db_url: str) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    first, second = await _seed(db_url, "first", "second")
    async with httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http:
        async with http.stream("GET", "/events/stream", headers=ADMIN_H) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream"
            reader = SSEReader(resp)
            assert await reader.next_block() == b": ping"
            for ws_id in (first, second):
                r = await http.post(f"/workspaces/{ws_id}/notify", json={"message": "m"}, headers=ADMIN_H)
                assert r.status_code == 200
            got = [json.loads((await reader.next_block())[len(b"data: ") :]) for _ in range(2)]
            assert [g["data"]["workspace_id"] for g in got] == [first, second]
