"""The Redis event bus on a real Redis: a batch published at once (`publish_many`, one pipeline) reaches
every replica's listeners in order, each event once, the publishing replica's included."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from workspace_server.events.bus import Event, RedisBus
from workspace_server.events.hub import Hub

WAIT = 10  # guards against hanging, never an assertion about speed


async def received(hub_client: object, count: int) -> list[Event]:
    queue: asyncio.Queue[Event] = hub_client.queue  # type: ignore[attr-defined]
    return [await asyncio.wait_for(queue.get(), WAIT) for _ in range(count)]


async def test_a_batch_reaches_every_replica_once_in_order(redis_url: str) -> None:
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
    buses = [RedisBus(c) for c in clients]
    try:
        for bus in buses:
            await bus.start()
        hubs = [Hub(bus) for bus in buses]
        listeners = [hub.register(None) for hub in hubs]
        mark = uuid.uuid4().hex  # other tests may publish on the same Redis: keep to ours
        batch = [
            Event("ACTIVITY_LOGGED", f"w{i}", {"mark": mark, "i": i}, "2026-12-07T00:00:00Z")
            for i in range(3)
        ]
        await buses[0].publish_many(batch)
        await buses[1].publish_many([Event("A2A_RESPONSE", "w9", {"mark": mark}, "2026-12-07T00:00:00Z")])
        for listener in listeners:
            got = [e for e in await received(listener, 4) if e.payload.get("mark") == mark]
            assert [(e.event, e.workspace_id) for e in got] == [
                ("ACTIVITY_LOGGED", "w0"),
                ("ACTIVITY_LOGGED", "w1"),
                ("ACTIVITY_LOGGED", "w2"),
                ("A2A_RESPONSE", "w9"),
            ]
            await asyncio.sleep(0.2)
            assert listener.queue.empty()  # each once: the publisher did not also deliver its own locally
    finally:
        for bus in buses:
            await bus.close()
        for c in clients:
            await c.aclose()
