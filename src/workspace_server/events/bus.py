"""Event fan-out: in-process, or across replicas through Redis pub/sub.

Every server process delivers to its local listeners (WebSocket hub, SSE streams) from exactly one path:
in-process buses deliver on publish; the Redis bus delivers what its subscriber reads back from
`events:broadcast`, so an event published by any replica reaches every replica's clients once.
(Upstream published to Redis but ignored what it read back, so replicas never saw each other's events.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from workspace_server.common.tasks import TaskSupervisor
from workspace_server.common.time import rfc3339, utcnow

log = logging.getLogger(__name__)

CHANNEL = "events:broadcast"


@dataclass(frozen=True)
class Event:
    event: str
    workspace_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: str = field(default_factory=lambda: rfc3339(utcnow()) or "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "workspace_id": self.workspace_id,
            "timestamp": self.timestamp,
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            event=str(d.get("event", "")),
            workspace_id=d.get("workspace_id"),
            payload=d.get("payload") or {},
            timestamp=str(d.get("timestamp", "")),
        )


def encode(event: Event) -> str:
    """Compact JSON of the wire frame `{"event","workspace_id","timestamp","payload"}` (UTF-8 kept, as Go)."""
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)


Listener = Callable[[Event], None]


class Bus(Protocol):
    def add_listener(self, fn: Listener) -> None: ...
    def remove_listener(self, fn: Listener) -> None: ...
    async def publish(self, event: Event) -> None: ...
    async def publish_many(self, events: Sequence[Event]) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class _Listeners:
    def __init__(self) -> None:
        # replaced, never changed in place: a delivery walks the tuple it started with, whatever a
        # listener adds or removes meanwhile (no copy per event)
        self._listeners: tuple[Listener, ...] = ()

    def add_listener(self, fn: Listener) -> None:
        self._listeners = (*self._listeners, fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            kept = list(self._listeners)
            kept.remove(fn)
            self._listeners = tuple(kept)

    def _deliver(self, event: Event) -> None:
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:  # a broken listener must not starve the others
                log.exception("event listener failed")


class InProcessBus(_Listeners):
    async def start(self) -> None:
        return None

    async def publish(self, event: Event) -> None:
        self._deliver(event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        for event in events:
            self._deliver(event)

    async def close(self) -> None:
        return None


RECONNECT_MAX_SECONDS = 5.0  # the subscriber's retry backoff cap while Redis is away


class RedisBus(_Listeners):
    """Publishes to Redis and delivers what its subscriber reads back.

    While the subscription is down (Redis stopped, or restarted and not resubscribed yet) this replica's
    own events are delivered locally as well: Redis would not hand them back to us, so without that they
    were lost for our own clients, also in the moment between Redis coming back and the resubscribe.
    Other replicas miss what Redis could not carry meanwhile.
    """

    def __init__(self, redis: Any, tasks: TaskSupervisor | None = None) -> None:
        super().__init__()
        self._redis = redis
        self._tasks = tasks if tasks is not None else TaskSupervisor()  # the app's, or one of its own
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._subscribed = False
        self._publish_failing = False

    async def start(self) -> None:
        self._task = self._tasks.spawn("redis-bus", self._run(), daemon=True)  # stopped by close()
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def publish(self, event: Event) -> None:
        await self.publish_many((event,))

    async def publish_many(self, events: Sequence[Event]) -> None:
        """One round trip for the lot (a pipeline of PUBLISHes, not a transaction): the activity writer
        announces a whole batch of rows at once."""
        subscribed = (
            self._subscribed
        )  # read before publishing: a resubscribe in between may duplicate, not lose
        try:
            if len(events) == 1:
                await self._redis.publish(CHANNEL, encode(events[0]))
            else:
                pipe = self._redis.pipeline(transaction=False)
                for event in events:
                    pipe.publish(CHANNEL, encode(event))
                await pipe.execute()
        except Exception as exc:
            # Redis down: other replicas miss these events, but this replica's own clients still get them.
            if not self._publish_failing:  # one line per outage, not one per event
                log.warning("redis publish failed (%s); delivering events locally only", type(exc).__name__)
            self._publish_failing = True
            for event in events:
                self._deliver(event)
            return
        if self._publish_failing:
            log.info("redis publish works again")
            self._publish_failing = False
        if not subscribed:
            for event in events:
                self._deliver(event)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                self._subscribed = True
                self._ready.set()
                backoff = 0.5
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    try:
                        event = Event.from_dict(json.loads(msg["data"]))
                    except (ValueError, TypeError):
                        log.warning("dropping malformed event on %s", CHANNEL)
                        continue
                    self._deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._subscribed or backoff == 0.5:
                    log.warning("redis event subscription lost (%s); reconnecting", type(exc).__name__)
                self._subscribed = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
            finally:
                self._subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
