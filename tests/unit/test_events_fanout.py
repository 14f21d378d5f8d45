"""Hub fan-out, wire encodings and the per-client hierarchy cache (no database, no network)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from workspace_server.activity.service import parse_limit, truncate_bytes
from workspace_server.events import ws as ws_mod
from workspace_server.events.bus import Event, InProcessBus, encode
from workspace_server.events.hub import SEND_BUFFER, SSE_BUFFER, Hub
from workspace_server.events.sse import PING, encode_sse, for_workspace, unix_ms


async def test_websocket_client_buffer_drops_overflow_and_keeps_order() -> None:
    bus = InProcessBus()
    hub = Hub(bus)
    client = hub.register(None)
    for i in range(SEND_BUFFER + 10):
        await bus.publish(Event("E", "w", {"i": i}))
    assert client.queue.qsize() == SEND_BUFFER
    assert client.dropped == 10
    first = client.queue.get_nowait()
    assert first.payload == {"i": 0}  # the oldest are kept, the overflow is dropped
    assert hub.client_count == 1
    hub.unregister(client)
    hub.unregister(client)  # idempotent
    assert hub.client_count == 0


async def test_sse_subscription_only_buffers_its_workspace() -> None:
    bus = InProcessBus()
    hub = Hub(bus)
    stream = hub.subscribe(for_workspace("a"))
    for i in range(SSE_BUFFER * 2):
        await bus.publish(Event("OTHER", "b", {"i": i}))  # never takes buffer space
    await bus.publish(Event("MINE", "a", {}))
    assert stream.queue.qsize() == 1
    assert stream.queue.get_nowait().event == "MINE"
    assert hub.client_count == 0  # SSE streams are not WebSocket connections
    for _ in range(SSE_BUFFER + 3):
        await bus.publish(Event("MINE", "a", {}))
    assert stream.queue.qsize() == SSE_BUFFER
    assert stream.dropped == 3


async def test_a_broken_listener_does_not_starve_the_hub() -> None:
    bus = InProcessBus()

    def broken(_: Event) -> None:
        raise RuntimeError("boom")

    bus.add_listener(broken)
    hub = Hub(bus)
    client = hub.register(None)
    await bus.publish(Event("E", "w", {}))
    assert client.queue.qsize() == 1


def test_websocket_frame_is_compact_json_in_reference_key_order() -> None:
    ev = Event("WORKSPACE_ONLINE", "w1", {"url": "http://x", "n": 1}, timestamp="2024-01-02T03:04:05.5Z")
    assert encode(ev) == (
        '{"event":"WORKSPACE_ONLINE","workspace_id":"w1","timestamp":"2024-01-02T03:04:05.5Z",'
        '"payload":{"url":"http://x","n":1}}'
    )
    assert encode(Event("E", "w", {"m": "héllo"})).count("héllo") == 1  # UTF-8 kept, not \\u escaped


def test_sse_bytes_match_the_reference_format() -> None:
    assert PING == b": ping\n\n"
    ev = Event("AGENT_MESSAGE", "w", {"message": "hi"}, timestamp="2024-01-02T03:04:05.123Z")
    raw = encode_sse(ev)
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    assert raw.count(b"\n") == 2
    assert raw[len(b"data: ") : -2] == (
        b'{"type":"AGENT_MESSAGE","timestamp":1704164645123,"data":{"message":"hi"}}'
    )


def test_unix_ms_reads_rfc3339_and_survives_garbage() -> None:
    assert unix_ms("1970-01-01T00:00:01Z") == 1000
    assert unix_ms("not a time") > 1_600_000_000_000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, 100),
        ("", 100),
        ("5", 5),
        ("500", 500),
        ("501", 500),
        ("0", 100),
        ("-3", 100),
        ("x", 100),
        ("1.5", 100),
        ("+7", 7),
    ],
)
def test_activity_limit_parsing(raw: str | None, expected: int) -> None:
    assert parse_limit(raw) == expected


def test_truncate_bytes_never_splits_a_character() -> None:
    assert truncate_bytes("short", 80) == "short"
    assert truncate_bytes("a" * 80, 80) == "a" * 80
    assert truncate_bytes("a" * 81, 80) == "a" * 80 + "..."
    cut = truncate_bytes("a" * 79 + "é" + "b", 80)  # é is two bytes and would straddle the limit
    assert cut == "a" * 79 + "..."


async def test_hierarchy_filter_caches_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    async def fake_can_communicate(_db: Any, caller: str, target: str) -> bool:
        calls.append((caller, target))
        return target == "sibling"

    monkeypatch.setattr(ws_mod, "can_communicate", fake_can_communicate)
    allowed = ws_mod.HierarchyFilter(engine=None, workspace_id="me")  # type: ignore[arg-type]
    burst = [Event("E", "sibling", {}) for _ in range(50)] + [Event("E", "stranger", {}) for _ in range(50)]
    results = [await allowed(ev) for ev in burst]
    assert results == [True] * 50 + [False] * 50
    assert calls == [("me", "sibling"), ("me", "stranger")]  # one lookup per workspace, not per event
    assert await allowed(Event("E", "me", {})) is True  # own events need no lookup
    assert await allowed(Event("E", None, {})) is False  # workspace-less events are canvas-only
    assert len(calls) == 2


async def test_hierarchy_filter_denies_when_the_lookup_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(_db: Any, _caller: str, _target: str) -> bool:
        raise RuntimeError("db down")

    monkeypatch.setattr(ws_mod, "can_communicate", broken)
    allowed = ws_mod.HierarchyFilter(engine=None, workspace_id="me")  # type: ignore[arg-type]
    assert await allowed(Event("E", "other", {})) is False


async def test_pump_ends_when_send_fails() -> None:
    bus = InProcessBus()
    hub = Hub(bus)
    client = hub.register(None)
    sent: list[str] = []

    async def send(ev: Event) -> None:
        sent.append(ev.event)
        if ev.event == "B":
            raise ConnectionError("peer gone")

    async def allow(_: Event) -> bool:
        return True

    for name in ("A", "B", "C"):
        await bus.publish(Event(name, "w", {}))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(hub.pump(client, send, allow), 10)
    assert sent == ["A", "B"]


def test_encoded_frame_round_trips_through_the_redis_wire() -> None:
    ev = Event("E", "w", {"k": [1, 2]}, timestamp="2024-01-01T00:00:00Z")
    assert Event.from_dict(json.loads(encode(ev))) == ev


async def test_redis_publish_failure_still_reaches_local_clients() -> None:
    from workspace_server.events.bus import RedisBus

    class DownRedis:
        async def publish(self, *_: Any) -> None:
            raise ConnectionError("redis down")

    bus = RedisBus(DownRedis())
    hub = Hub(bus)
    client = hub.register(None)
    await bus.publish(Event("E", "w", {}))
    assert client.queue.get_nowait().event == "E"


async def test_redis_publish_while_unsubscribed_reaches_local_clients_once() -> None:
    """Redis back but the subscriber not yet resubscribed: Redis would not hand the event back to us."""
    from workspace_server.events.bus import RedisBus

    class UpRedis:
        async def publish(self, *_: Any) -> int:
            return 0

    bus = RedisBus(UpRedis())
    hub = Hub(bus)
    client = hub.register(None)
    await bus.publish(Event("E", "w", {}))
    assert client.queue.get_nowait().event == "E"
    bus._subscribed = True  # subscribed: the subscriber delivers it, publish must not deliver it again
    await bus.publish(Event("F", "w", {}))
    assert client.queue.empty()


@pytest.mark.parametrize(
    ("cors", "origin", "ok"),
    [
        ("", "https://anything.example", True),
        ("", "", True),
        ("https://canvas.example, http://b.example", "https://canvas.example", True),
        ("https://canvas.example, http://b.example", "http://b.example", True),
        ("https://canvas.example", "https://CANVAS.example", True),  # case-insensitive, as EqualFold
        ("https://canvas.example", "https://evil.example", False),
        ("https://canvas.example", "", False),
    ],
)
def test_websocket_origin_rule(cors: str, origin: str, ok: bool) -> None:
    from workspace_server.config import Settings

    assert ws_mod.origin_allowed(Settings(CORS_ORIGINS=cors), origin) is ok


async def test_a_redis_batch_that_cannot_be_published_reaches_local_clients_in_order() -> None:
    from workspace_server.events.bus import RedisBus

    class DownPipeline:
        def publish(self, *_: Any) -> None:
            return None

        async def execute(self) -> None:
            raise ConnectionError("redis down")

    class DownRedis:
        def pipeline(self, transaction: bool = True) -> DownPipeline:
            assert transaction is False  # a batch of announcements, not a transaction
            return DownPipeline()

    bus = RedisBus(DownRedis())
    client = Hub(bus).register(None)
    await bus.publish_many([Event("A", "w", {}), Event("B", "w", {})])
    assert [client.queue.get_nowait().event for _ in range(2)] == ["A", "B"]


async def test_a_listener_removed_while_an_event_is_delivered_misses_only_later_events() -> None:
    bus = InProcessBus()
    seen: list[tuple[str, str]] = []

    def once(event: Event) -> None:
        seen.append(("once", event.event))
        bus.remove_listener(once)

    def always(event: Event) -> None:
        seen.append(("always", event.event))

    bus.add_listener(once)
    bus.add_listener(always)
    await bus.publish(Event("A", "w"))
    await bus.publish(Event("B", "w"))
    assert seen == [("once", "A"), ("always", "A"), ("always", "B")]
    bus.remove_listener(once)  # already gone: nothing happens
    bus.remove_listener(always)
    await bus.publish(Event("C", "w"))
    assert seen[-1] == ("always", "B")
