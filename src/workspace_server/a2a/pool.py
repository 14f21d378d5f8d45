"""The A2A proxy's outbound transport: the two connection pools agent calls go out on (`a2a_client`, over
`transport.AgentClient`), and the idle watch that decides when a quiet agent has had long enough
(`run_watched`, `IdleTimeout`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Coroutine
from typing import Any

from workspace_server.a2a.transport import AgentClient
from workspace_server.context import AppContext
from workspace_server.egress import policy_for
from workspace_server.events.bus import Event

# No read/write timeout: the idle watch decides when a quiet agent has had long enough. CONNECT_TIMEOUT
# bounds the wait for a free connection plus the connect itself; SOCK_CONNECT_TIMEOUT the connect alone.
CONNECT_TIMEOUT = 30.0
SOCK_CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 2000  # agent connections open at once, all agents together
KEEPALIVE_SECONDS = 5.0  # idle agent connections are closed after this
MAX_RESPONSE_BYTES = 10 << 20  # a longer reply (decoded) is a read failure


# ---- the outbound client ----


def a2a_client(ctx: AppContext, assigned_url: bool = False) -> AgentClient:
    """The pool for agent calls, created on first use and closed by `close_client`.

    Agent-supplied URLs connect only to addresses the egress policy admits, judged when a connection is
    opened (transport.py), so DNS rebinding cannot get past the check made before the call. URLs this
    server's backend assigned (`assigned_url`) use a second pool without the policy: they may be loopback
    or a container name on the Docker network.

    Its own pool, not the shared httpx `ctx.http`: A2A calls last minutes, so a few dozen in flight would
    starve every other outbound call; and its own client, since this is the data path of every A2A
    message (docs/decisions.md "The A2A transport"). No cookies are kept: agents share hosts (127.0.0.1,
    ports apart), and cookies do not isolate by port.
    """
    parts = ctx.a2a
    client = parts.trusted_client if assigned_url else parts.client
    if client is None:
        client = AgentClient(
            None if assigned_url else policy_for(ctx.settings),
            max_connections=MAX_CONNECTIONS,
            keepalive=KEEPALIVE_SECONDS,
            connect_timeout=CONNECT_TIMEOUT,
            sock_connect_timeout=SOCK_CONNECT_TIMEOUT,
            max_body=MAX_RESPONSE_BYTES,
        )
        if assigned_url:
            parts.trusted_client = client
        else:
            parts.client = client
    return client


async def close_client(ctx: AppContext) -> None:
    parts = ctx.a2a
    clients = (parts.client, parts.trusted_client)
    parts.client = parts.trusted_client = None
    for client in clients:
        if client is not None:
            await client.close()


# ---- idle watch: the time of the last bus event per workspace with a dispatch in flight ----


class _Watched:
    """One dispatch under watch: cancelled once `idle` seconds pass without a bus event for its workspace
    (counted from its start), or at its absolute `hard` deadline."""

    __slots__ = ("fired", "hard", "idle", "queued", "start", "task", "ws_id")

    def __init__(self, task: asyncio.Task[Any], ws_id: str, idle: float, hard: float | None) -> None:
        self.task = task
        self.ws_id = ws_id
        self.start = time.monotonic()
        self.idle = idle
        self.hard = hard
        self.fired: bool | None = None  # set when cancelled by the watch: whether the hard deadline did it
        self.queued = True  # it has an entry in the watch's heap

    def deadline(self, last_event: float) -> float:
        soft = max(self.start, last_event) + self.idle
        return soft if self.hard is None else min(soft, self.hard)


class IdleWatch:
    """One bus listener and one timer for all dispatches (not a subscription or a timer per request).

    Dispatches wait in a heap by the deadline they had when last looked at; the timer is set for the
    earliest. When it fires, a due dispatch's deadline is computed again (events may have moved it): still
    due, its task is cancelled; otherwise it goes back with the new one. A finished dispatch only marks its
    entry, and the heap is rebuilt without such entries once they outnumber the live ones (a call costs a
    push and a mark, not a TimerHandle made and cancelled: ~2–4 µs a proxied call).
    """

    def __init__(self) -> None:
        self._seen: dict[str, list[float]] = {}  # ws -> [last event (monotonic), dispatches in flight]
        self._heap: list[tuple[float, int, _Watched]] = []
        self._order = itertools.count()  # ties in the heap, as _Watched do not compare
        self._finished = 0  # entries in the heap whose dispatch is over
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_event(self, event: Event) -> None:
        rec = self._seen.get(event.workspace_id or "")
        if rec is not None:
            rec[0] = time.monotonic()

    def enter(self, ws_id: str) -> None:
        rec = self._seen.setdefault(ws_id, [0.0, 0.0])
        rec[1] += 1

    def leave(self, ws_id: str) -> None:
        rec = self._seen.get(ws_id)
        if rec is not None:
            rec[1] -= 1
            if rec[1] <= 0:
                del self._seen[ws_id]

    def last_event(self, ws_id: str) -> float:
        rec = self._seen.get(ws_id)
        return rec[0] if rec else 0.0

    def watch(self, task: asyncio.Task[Any], ws_id: str, idle: float, hard: float | None) -> _Watched:
        watched = _Watched(task, ws_id, idle, hard)
        self.enter(ws_id)
        due = watched.deadline(0.0)
        heapq.heappush(self._heap, (due, next(self._order), watched))
        self._arm(task.get_loop(), due)
        return watched

    def unwatch(self, watched: _Watched) -> None:
        self.leave(watched.ws_id)
        if watched.queued:
            watched.queued = False
            self._finished += 1
            if self._finished > 64 + 2 * (len(self._heap) - self._finished):
                self._heap = [entry for entry in self._heap if entry[2].queued]
                heapq.heapify(self._heap)
                self._finished = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None and self._loop is loop:
            if at >= self._timer_at:
                return
            self._timer.cancel()
        self._loop, self._timer_at = loop, at
        self._timer = loop.call_later(max(0.0, at - time.monotonic()), self._sweep)

    def _sweep(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, watched = heapq.heappop(heap)
            if not watched.queued:
                self._finished -= 1
                continue
            due = watched.deadline(self.last_event(watched.ws_id))
            if due <= now:
                watched.queued = False
                watched.fired = watched.hard is not None and due >= watched.hard
                watched.task.cancel()
            else:
                heapq.heappush(heap, (due, next(self._order), watched))
        if heap and self._loop is not None:
            self._arm(self._loop, heap[0][0])


def idle_watch(ctx: AppContext) -> IdleWatch:
    return ctx.a2a.idle_watch


class IdleTimeout(Exception):
    def __init__(self, seconds: float, ceiling: bool) -> None:
        super().__init__(
            f"no reply and no activity for {seconds:g}s" if not ceiling else "dispatch ceiling reached"
        )
        self.ceiling = ceiling


async def run_watched(
    watch: IdleWatch, ws_id: str, coro: Coroutine[Any, Any, Any], idle: float, ceiling: float | None
) -> Any:
    """Await `coro`, cancelling it after `idle` seconds without a bus event for `ws_id` (or at `ceiling`)."""
    task = asyncio.current_task()
    assert task is not None
    watched = watch.watch(task, ws_id, idle, time.monotonic() + ceiling if ceiling else None)
    try:
        return await coro
    except asyncio.CancelledError:
        if watched.fired is not None and task.uncancel() == 0:
            raise IdleTimeout(idle, ceiling=watched.fired) from None
        raise
    finally:
        watch.unwatch(watched)
