"""Redis stopped (SIGKILL) and started again under a live server (issue 11 §5).

The server keeps answering heartbeats, A2A calls and reads while Redis is gone (its caches and the event
bus fall back in-process), every event still reaches a WebSocket client on this replica, and once Redis
is back the server uses it again without a restart: the bus resubscribes, the A2A proxy caches in it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets

from tests.faults.conftest import ServerFactory
from tests.faults.services import RedisServer
from tests.integration.a2a_support import StubAgent, message

pytestmark = pytest.mark.integration

ANSWER_DEADLINE = 3.0  # every request is answered within this
EVENT_DEADLINE = 3.0  # every TASK_UPDATED reaches the WebSocket client within this
RECOVERY_DEADLINE = 15.0  # Redis back: the bus resubscribed and keys are written again within this
STEPS_DOWN = 6
STEP_PAUSE = 0.25


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


class Traffic:
    """One workspace's heartbeats (each with a new current_task), A2A calls and reads, recorded."""

    def __init__(self, http: httpx.AsyncClient, wid: str, token: str) -> None:
        self.http = http
        self.wid = wid
        self.auth = {"Authorization": f"Bearer {token}"}
        self.n = 0
        self.sent: list[tuple[str, str]] = []  # (phase, current_task) of each acknowledged heartbeat
        self.answers: list[tuple[str, str, int, float]] = []  # (phase, kind, status, seconds)

    async def _timed(self, phase: str, kind: str, call: Any) -> httpx.Response:
        start = time.monotonic()
        r: httpx.Response = await call
        self.answers.append((phase, kind, r.status_code, time.monotonic() - start))
        return r

    async def step(self, phase: str) -> None:
        self.n += 1
        task = f"{phase}-{self.n}"
        hb = {"workspace_id": self.wid, "current_task": task, "active_tasks": 1}
        r = await self._timed(
            phase, "heartbeat", self.http.post("/registry/heartbeat", json=hb, headers=self.auth)
        )
        if r.status_code == 200:
            self.sent.append((phase, task))
        await self._timed(phase, "a2a", self.http.post(f"/workspaces/{self.wid}/a2a", json=message(task)))
        await self._timed(phase, "read", self.http.get(f"/workspaces/{self.wid}"))


async def test_redis_stopped_and_started(
    server_factory: ServerFactory, redis_server: RedisServer, agent: StubAgent
) -> None:
    srv = server_factory(REDIS_URL=redis_server.url)
    http = httpx.AsyncClient(base_url=srv.url, timeout=ANSWER_DEADLINE)
    probe = aioredis.from_url(redis_server.url)
    events: dict[str, list[float]] = {}  # current_task -> arrival times of its TASK_UPDATED
    try:
        r = await http.post("/workspaces", json={"name": "Redis Fault", "runtime": "external"})
        assert r.status_code == 201, r.text
        wid, token = r.json()["id"], r.json()["connection"]["auth_token"]
        url = agent.url.replace("127.0.0.1", "localhost")  # loopback by name: allowed outside production
        reg = {"id": wid, "url": url, "agent_card": {"name": "Redis Fault"}}
        r = await http.post("/registry/register", json=reg, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        traffic = Traffic(http, wid, token)

        connected = asyncio.Event()

        async def listen() -> None:
            async with websockets.connect(srv.url.replace("http://", "ws://") + "/ws") as ws:
                connected.set()
                async for frame in ws:
                    ev = json.loads(frame)
                    if ev["event"] == "TASK_UPDATED" and ev["workspace_id"] == wid:
                        events.setdefault(ev["payload"]["current_task"], []).append(time.monotonic())

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(connected.wait(), 10)
        await asyncio.sleep(0.2)  # the server side registers the client with the hub after the handshake

        for _ in range(3):
            await traffic.step("before")
            await asyncio.sleep(STEP_PAUSE)
        assert await probe.exists(f"ws:{wid}:url") == 1  # the A2A proxy's URL cache lives in Redis

        redis_server.stop()
        down_at = time.monotonic()
        for _ in range(STEPS_DOWN):
            await traffic.step("down")
            await asyncio.sleep(STEP_PAUSE)
        outage = time.monotonic() - down_at
        redis_server.start()
        up_at = time.monotonic()
        await probe.aclose()
        probe = aioredis.from_url(redis_server.url)  # a fresh server: nothing of before survived

        # recovery: the bus is subscribed again and the A2A proxy caches the URL in Redis again
        resubscribed = keys_back = None
        while time.monotonic() - up_at < RECOVERY_DEADLINE and (resubscribed is None or keys_back is None):
            await traffic.step("after")
            now = time.monotonic() - up_at
            if resubscribed is None and dict(await probe.pubsub_numsub("events:broadcast")).get(
                b"events:broadcast", 0
            ):
                resubscribed = now
            if keys_back is None and await probe.exists(f"ws:{wid}:url"):
                keys_back = now
            await asyncio.sleep(STEP_PAUSE)
        for _ in range(3):  # and events keep flowing through Redis once it is subscribed
            await traffic.step("after")
            await asyncio.sleep(STEP_PAUSE)
        await asyncio.sleep(EVENT_DEADLINE)
        listener.cancel()

        assert srv.alive() and srv.starts == 1  # never restarted
        assert resubscribed is not None, "the event bus did not resubscribe to Redis"
        assert keys_back is not None, "the URL cache did not write Redis again"
        bad = [a for a in traffic.answers if a[2] not in (200, 503)]
        assert not bad, f"answers other than 200/503: {bad}"
        slow = [a for a in traffic.answers if a[3] > ANSWER_DEADLINE]
        assert not slow, slow
        down = [a for a in traffic.answers if a[0] == "down"]
        assert {a[2] for a in down} == {200}, (
            f"Redis is a cache and a bus: nothing needs it to answer: {down}"
        )
        lost = [task for _, task in traffic.sent if task not in events]
        assert not lost, f"TASK_UPDATED of acknowledged heartbeats never reached the WebSocket: {lost}"
        dup = sum(len(v) - 1 for v in events.values())
        print(
            f"\nFIGURES redis: outage {outage:.1f}s, {len(down)} requests during it (all 200, slowest"
            f" {max(a[3] for a in down) * 1000:.0f} ms), bus resubscribed {resubscribed:.1f}s and URL cache"
            f" written {keys_back:.1f}s after Redis came back; {len(traffic.sent)} events, 0 lost,"
            f" {dup} duplicated"
        )
    finally:
        await probe.aclose()
        await http.aclose()
