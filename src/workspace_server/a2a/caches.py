"""Per-process memory that spares the A2A pipeline database round trips: the target's row for a moment
(`TargetCache`) and which workspaces' queues were lately seen empty (`QueueHint`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from workspace_server.context import AppContext
from workspace_server.events.bus import Event

# ---- target cache: the workspace row for TTL seconds, dropped on any lifecycle event ----


class TargetCache:
    """Spares the database a read per call. Budget and URL are at most TTL seconds stale; status
    changes (removed, hibernated, offline, ...) come with a WORKSPACE_* event and drop the entry.

    Calls that miss together share one query (`load`): with 50 calls in flight to one agent, every
    expiry would otherwise send 50 identical reads at once."""

    TTL = 2.0
    QUIET = frozenset({"WORKSPACE_HEARTBEAT"})

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Any, float]] = {}
        self._loading: dict[str, asyncio.Task[Any]] = {}

    def get(self, ws_id: str) -> Any | None:
        hit = self._rows.get(ws_id)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, ws_id: str, row: Any) -> None:
        if len(self._rows) > 50_000:
            self._rows.clear()
        self._rows[ws_id] = (row, time.monotonic() + self.TTL)

    async def load(self, ws_id: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """The row from `fetch`, shared with every other caller that asks before it returns."""
        pending = self._loading.get(ws_id)
        if pending is None:
            # unsupervised: one read shared by the concurrent requests awaiting it, not background work
            pending = self._loading[ws_id] = asyncio.ensure_future(self._fetch(ws_id, fetch))
        return await asyncio.shield(pending)  # a caller that gives up does not cancel the others' query

    async def _fetch(self, ws_id: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        me = asyncio.current_task()
        try:
            row = await fetch()
        finally:
            current = self._loading.get(ws_id) is me
            if current:
                del self._loading[ws_id]
        if current and row is not None:  # not current: a WORKSPACE_* event came meanwhile, row may be stale
            self.put(ws_id, row)
        return row

    def drop(self, ws_id: str) -> None:
        self._rows.pop(ws_id, None)
        self._loading.pop(ws_id, None)  # later callers query again rather than join a read from before

    def on_event(self, event: Event) -> None:
        if event.event.startswith("WORKSPACE_") and event.event not in self.QUIET:
            self.drop(event.workspace_id or "")


def target_cache(ctx: AppContext) -> TargetCache:
    return ctx.a2a.target_cache


# ---- queue hint: skip the drain's DB round trips while a workspace's queue is known to be empty ----


class QueueHint:
    """Per process: when each workspace's queue was last seen empty, and which got items since.

    An "empty" verdict is trusted for RECHECK seconds only; after that the next heartbeat looks at the
    database again (and reclaims expired leases).
    A look that began before an enqueue in this process does not count (`mark`/`seen_empty(since=)`):
    taken after the enqueue, its "empty" would hide the new item, delaying its drain, or letting a resent
    message skip the duplicate check and be delivered twice.
    `shared` (replicas: the event bus crosses processes): another replica's enqueue is never seen here,
    and a resend through this replica of a message queued through another one would skip the duplicate
    check and be delivered twice (tests/integration/test_replicas.py), so no "empty" verdict is trusted.
    """

    RECHECK = 5.0
    MAX_KEYS = 100_000

    def __init__(self, shared: bool = False) -> None:
        self._shared = shared
        self._empty_at: dict[str, float] = {}
        self._touched: dict[str, int] = {}
        self._seq = 0
        self._cleared = 0  # `_seq` when `_touched` was last cleared: older marks cannot be checked

    def mark(self) -> int:
        """Taken before looking at the queue; pass it to `seen_empty`."""
        return self._seq

    def touch(self, ws_id: str) -> None:
        self._empty_at.pop(ws_id, None)
        self._seq += 1
        if len(self._touched) > self.MAX_KEYS:
            self._touched.clear()
            self._cleared = self._seq
        self._touched[ws_id] = self._seq

    def seen_empty(self, ws_id: str, since: int) -> None:
        if since < self._cleared or self._touched.get(ws_id, 0) > since:
            return
        if len(self._empty_at) > self.MAX_KEYS:
            self._empty_at.clear()
        self._empty_at[ws_id] = time.monotonic()

    def probably_empty(self, ws_id: str) -> bool:
        if self._shared:
            return False
        at = self._empty_at.get(ws_id)
        return at is not None and time.monotonic() - at < self.RECHECK


def queue_hint(ctx: AppContext) -> QueueHint:
    return ctx.a2a.queue_hint
