"""Per-process memory that spares the A2A pipeline database round trips: the target's row for a moment
(`TargetCache`) and which workspaces' queues were lately seen empty (`QueueHint`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from workspace_server.common.kv import KV, queue_epoch_key
from workspace_server.context import AppContext
from workspace_server.events.bus import Event

log = logging.getLogger(__name__)

# ---- target cache: the workspace row for TTL seconds, dropped on any lifecycle event ----


class TargetCache:
    """Spares a read per call: the target's row from the database (`ctx.a2a.target_cache`), and its
    cached URL from the key/value cache (`ctx.a2a.url_cache`; with replicas that is a Redis round trip).
    Either is at most TTL seconds stale; status and URL changes (registered, removed, hibernated,
    offline, ...) come with a WORKSPACE_* event, which crosses replicas on the bus and drops the entry.
    Only found values are kept: a miss is asked again by the next call.

    Calls that miss together share one read (`load`): with 50 calls in flight to one agent, every
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


def url_cache(ctx: AppContext) -> TargetCache:
    return ctx.a2a.url_cache


# ---- queue hint: skip the drain's DB round trips while a workspace's queue is known to be empty ----


@dataclass(frozen=True)
class Mark:
    """Taken when a look at the queue begins (`QueueHint.look`); handed back to `seen_empty`."""

    seq: int  # this process's enqueue counter
    epoch: str | None  # with replicas: the workspace's shared queue epoch ("" never bumped; None unread)


class QueueHint:
    """Per process: when each workspace's queue was last seen empty, and which got items since.

    An "empty" verdict is trusted for RECHECK seconds only; after that the next heartbeat looks at the
    database again (and reclaims expired leases).
    A look that began before an enqueue does not count (`look` → Mark → `seen_empty(since=)`): taken
    after the enqueue, its "empty" would hide the new item, delaying its drain, or letting a resent
    message skip the duplicate check and be delivered twice.
    With replicas (`kv`: the shared cache) another replica's enqueue is not seen here, so each enqueue
    also bumps the workspace's queue epoch in the shared cache after it commits (`announce`), and an
    "empty" verdict holds only while the epoch is the one read before the look: one cache read per
    keyed call instead of a database query (tests/integration/test_replicas.py: a resend through B of a
    message queued through A is answered from the queue). An epoch that cannot be read trusts nothing.
    """

    RECHECK = 5.0
    MAX_KEYS = 100_000
    EPOCH_TTL = 86_400.0  # far beyond RECHECK: an expired and re-created epoch cannot repeat a value in time

    def __init__(self, kv: KV | None = None) -> None:
        self._kv = kv
        self._empty_at: dict[str, tuple[float, str]] = {}
        self._touched: dict[str, int] = {}
        self._seq = 0
        self._cleared = 0  # `_seq` when `_touched` was last cleared: older marks cannot be checked
        self._unreadable = False  # one warning per outage of the shared cache

    async def look(self, ws_id: str) -> tuple[bool, Mark]:
        """Whether `ws_id`'s queue is known to be empty, and the mark of a look at it beginning now."""
        seq = self._seq  # before the read: an enqueue here while it waits voids this look's verdict
        epoch: str | None = ""
        if self._kv is not None:
            epoch = await self._read_epoch(ws_id)
        mark = Mark(seq, epoch)
        seen = self._empty_at.get(ws_id)
        empty = (
            seen is not None
            and epoch is not None
            and seen[1] == epoch
            and time.monotonic() - seen[0] < self.RECHECK
        )
        return empty, mark

    async def _read_epoch(self, ws_id: str) -> str | None:
        assert self._kv is not None
        try:
            value = await self._kv.get(queue_epoch_key(ws_id))
        except Exception as exc:
            if not self._unreadable:
                log.warning("a2a: queue epochs unreadable (%s); every keyed call looks at the queue", exc)
            self._unreadable = True
            return None
        self._unreadable = False
        return value or ""

    def touch(self, ws_id: str) -> None:
        """An item was queued for `ws_id` by this process (then `announce` it to the replicas)."""
        self._empty_at.pop(ws_id, None)
        self._seq += 1
        if len(self._touched) > self.MAX_KEYS:
            self._touched.clear()
            self._cleared = self._seq
        self._touched[ws_id] = self._seq

    async def announce(self, ws_id: str) -> None:
        """Bump the shared epoch, after the enqueue committed: a look that saw the queue empty began
        before the commit, so it read the epoch before this bump and its verdict stops holding."""
        if self._kv is not None:
            await self._kv.incr(queue_epoch_key(ws_id), self.EPOCH_TTL)

    def seen_empty(self, ws_id: str, since: Mark) -> None:
        if since.epoch is None or since.seq < self._cleared or self._touched.get(ws_id, 0) > since.seq:
            return
        if len(self._empty_at) > self.MAX_KEYS:
            self._empty_at.clear()
        self._empty_at[ws_id] = (time.monotonic(), since.epoch)


def queue_hint(ctx: AppContext) -> QueueHint:
    return ctx.a2a.queue_hint
