"""Batched side effects of proxied calls (spec 04 §1.8): `a2a_receive` rows, `last_outbound_at`, and the
events that announce them.

A busy proxy writes one activity row per call. Writing each in its own transaction (pool checkout,
BEGIN, INSERT, COMMIT) cost more than the proxying itself, so rows are buffered for at most
ACTIVITY_FLUSH_SECONDS (20 ms) and written together (logstore.py: one statement for the rows, one
UPDATE for the stamps).

Nothing is lost on a crash: `add` journals the row (journal.py, one append to a file of this process)
before the call is answered, and a flush removes its journal segment only once its rows are committed.
While the database is away the batch is held and retried (backing off to RETRY_MAX_SECONDS), its
segments kept; rows of a process that died stay in its segments, which the next start stores
(`start`, idempotent by row id). ACTIVITY_LOGGED (and an A2A_RESPONSE handed in with a row) is
broadcast after the rows are stored: nothing is announced that was not written.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workspace_server.a2a.journal import ActivityJournal, RawColumns, Segment, encode_entry
from workspace_server.a2a.logstore import ActivitySink, SqlActivitySink, sink_for
from workspace_server.common.errors import backing_store_down
from workspace_server.common.ids import new_id
from workspace_server.common.jsonnum import contains_nul, scrub_nul
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.events.service import Announcement

log = logging.getLogger(__name__)

JOURNAL_DIR = "activity-journal"  # under DATA_DIR
MAX_BATCH = 200  # rows per statement
MAX_HELD = 20_000  # rows kept in memory while the database is away; past that they wait in the journal
RETRY_MAX_SECONDS = 30.0
CLOSE_WAIT_SECONDS = 10.0
# ACTIVITY_LOGGED payload keys (spec 04 §3), sorted as Go marshals a map; an optional "tool_trace" last
LOGGED_KEYS = ("activity_type", "duration_ms", "method", "source_id", "status", "summary", "target_id")


@dataclass
class _Pending:
    rows: list[dict[str, Any]] = field(default_factory=list)
    outbound: set[str] = field(default_factory=set)
    events: list[Announcement] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # each row's journal entry (`encode_entry`), in order

    def __bool__(self) -> bool:
        return bool(self.rows or self.outbound)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class _Bound:
    ctx: AppContext
    sink: ActivitySink
    fallback: SqlActivitySink  # the row-by-row retry after a failed batch, and the restore
    journal: ActivityJournal


class LogWriter:
    """Built with the A2A parts (`a2a.make_parts`), bound to its app by the composition root."""

    def __init__(self) -> None:
        self._bound: _Bound | None = None
        self._pending = _Pending()
        self._task: asyncio.Task[None] | None = None
        self._segments: list[Segment] = []  # journal segments whose rows are pending (held), oldest first
        self._failing = False
        self._flushing = False

    def bind(self, ctx: AppContext) -> None:
        journal = ActivityJournal(ctx.settings.DATA_DIR / JOURNAL_DIR)
        self._bound = _Bound(ctx, sink_for(ctx.engine), SqlActivitySink(ctx.engine), journal)

    @property
    def bound(self) -> _Bound:
        if self._bound is None:
            raise RuntimeError("LogWriter used before the app bound it")
        return self._bound

    async def start(self) -> None:
        """Open this process's journal and store what dead processes left in theirs."""
        journal = self.bound.journal
        if not journal.open():
            return
        for path, fd, entries in journal.recover():
            rows = [_restored(e.row) for e in entries]
            outbound = {e.outbound for e in entries if e.outbound}
            try:
                written = await self._store(rows, outbound, restore=True)
            except Exception:
                log.exception("a2a: journal %s not restored; kept for the next start", path.name)
                ActivityJournal.unlock(fd)
                continue
            log.info(
                "a2a: restored %d of %d activity rows from journal %s", len(written), len(rows), path.name
            )
            ActivityJournal.release(path, fd)

    def add(
        self,
        row: dict[str, Any],
        outbound_caller: str | None = None,
        event: Announcement | None = None,
        raw: RawColumns | None = None,
    ) -> None:
        """Journal an activity row (columns of `activity_logs`; a fresh dict, which the writer takes over
        and gives its id and created_at) and queue it, optionally with a caller to stamp and an event to
        broadcast once the row is stored. `raw`: JSON columns as the JSON text the caller already has
        (valid JSON of the same value), used instead of encoding them again."""
        bound = self.bound
        row["id"] = new_id()
        row["created_at"] = utcnow()
        line = encode_entry(row, outbound_caller, raw)  # also the row in the Postgres batch
        bound.journal.append(line)
        pending = self._pending
        pending.rows.append(row)
        pending.lines.append(line)
        if outbound_caller:
            pending.outbound.add(outbound_caller)
        if event is not None:
            pending.events.append(event)
        if self._task is None or self._task.done():
            # daemon: the supervisor's shutdown leaves it to `close` (which stores what the drained
            # deliveries still add), rather than waiting out its pause or cancelling a write
            self._task = bound.ctx.tasks.spawn("a2a-log-writer", self._run(), daemon=True)

    async def _run(self) -> None:
        delay = self.bound.ctx.settings.ACTIVITY_FLUSH_SECONDS  # a row may wait this long for companions
        wait = delay
        while self._pending:
            await asyncio.sleep(wait)
            # while the database is away, retry with a growing pause rather than every `delay`
            wait = delay if await self.flush() else min(max(wait * 2, 1.0), RETRY_MAX_SECONDS)

    async def flush(self) -> bool:
        """Store what is pending; False when the database could not be reached (the batch is held)."""
        self._flushing = True
        try:
            return await self._flush()
        finally:
            self._flushing = False

    async def _flush(self) -> bool:
        bound = self.bound
        batch, self._pending = self._pending, _Pending()
        segment = bound.journal.rotate()
        if segment is not None:
            self._segments.append(segment)
        try:
            written = await self._store(batch.rows, batch.outbound, lines=batch.lines)
        except Exception as exc:
            if not self._failing:  # one line per outage, not one per retry
                log.warning("a2a: activity rows not stored (%s); held and journaled until they are", exc)
            self._failing = True
            self._hold(batch)
            return False
        if self._failing:
            log.info("a2a: activity rows are stored again")
        self._failing = False
        for seg in self._segments:  # every row journaled in them was in this batch
            bound.journal.discard(seg)
        self._segments.clear()
        # the batch is announced at one moment, in one publish: the calls' events, then a row's each
        logged = [("ACTIVITY_LOGGED", row["workspace_id"], _logged_payload(row)) for row in written]
        await bound.ctx.events.broadcast_many([*batch.events, *logged], rfc3339(utcnow()) or "")
        return True

    def _hold(self, batch: _Pending) -> None:
        """Put a batch the database refused back in front of what arrived meanwhile. Past MAX_HELD rows
        the memory copy is dropped: those rows wait in their journal segments, which are let go (kept on
        disk, unlocked) for the next start to store."""
        later = self._pending
        if len(batch.rows) + len(later.rows) > MAX_HELD:
            for seg in self._segments:
                ActivityJournal.unlock(seg.fd)
            self._segments.clear()
            batch = _Pending(events=batch.events)  # the rows are on disk; the events wait no longer
            log.error(
                "a2a: over %d activity rows held; the rest wait in the journal until a restart", MAX_HELD
            )
        batch.rows += later.rows
        batch.outbound |= later.outbound
        batch.events += later.events
        batch.lines += later.lines
        self._pending = batch

    async def _store(
        self,
        rows: list[dict[str, Any]],
        outbound: set[str],
        restore: bool = False,
        lines: list[bytes] | None = None,
    ) -> list[dict[str, Any]]:
        """Write `rows` in statements of MAX_BATCH; a failed statement is retried row by row (one bad row
        must not take the batch down). The rows written (as written); raises only when the database
        cannot be reached."""
        bound = self.bound
        written: list[dict[str, Any]] = []
        for start in range(0, max(len(rows), 1), MAX_BATCH):
            chunk = rows[start : start + MAX_BATCH]
            stamps = outbound if start == 0 else set()
            try:
                if restore:
                    await bound.fallback.write(chunk, stamps, restore=True)
                else:
                    await bound.sink.write(chunk, stamps, (lines or [])[start : start + MAX_BATCH])
                written += chunk
            except Exception as exc:
                if backing_store_down(exc):
                    raise
                log.warning("a2a: writing %d activity rows failed; retrying one by one", len(chunk))
                written += await self._write_each(chunk, stamps)
        return written

    async def _write_each(self, rows: list[dict[str, Any]], outbound: set[str]) -> list[dict[str, Any]]:
        """Each row alone, through the SQL sink. A row that carries NUL characters (an A2A message may;
        Postgres text and jsonb cannot) is written with them replaced by U+FFFD rather than dropped; a row
        that still fails (its workspace purged, say) is dropped with an error line. A database that cannot
        be reached raises: the rows stay journaled."""
        fallback = self.bound.fallback
        written = []
        for row in rows:
            for candidate in _variants(row):
                try:
                    await fallback.write([candidate], set(), restore=True)
                except Exception as exc:
                    if backing_store_down(exc):
                        raise
                    log.warning("a2a: activity row for %s not written: %s", row.get("workspace_id"), exc)
                    continue
                written.append(candidate)
                break
            else:
                log.error("a2a: activity row for %s dropped", row.get("workspace_id"))
        await fallback.write([], outbound)
        return written

    async def close(self) -> None:
        """Store what is queued: a running flush is let finish (cancelling it mid-write would lose its
        place; a writer retrying an unreachable database is stopped), then the rest is flushed once;
        what cannot be stored stays journaled for the next start."""
        task = self._task
        if task is not None and not task.done():
            if not self._flushing or self._failing:
                task.cancel()  # asleep between flushes, or retrying a database that is away
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                if self._flushing:
                    log.warning("a2a: the activity writer was stopped mid-write; its rows stay journaled")
        if self._bound is None:
            return
        if self._pending and not await self.flush():
            log.warning(
                "a2a: %d activity rows left in the journal for the next start", len(self._pending.rows)
            )
        for seg in self._segments:
            ActivityJournal.unlock(seg.fd)
        self._segments.clear()
        self._bound.journal.close()
        await self._bound.sink.close()


def _restored(row: dict[str, Any]) -> dict[str, Any]:
    created = row.get("created_at")
    if isinstance(created, str):
        row["created_at"] = datetime.fromisoformat(created)
    return row


def _variants(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row, then (when it holds NUL characters) its NUL-free copy."""
    return [row] if not contains_nul(row) else [row, scrub_nul(row)]


def _logged_payload(row: dict[str, Any]) -> dict[str, Any]:
    """Keys in sorted order as built (LOGGED_KEYS is sorted, and tool_trace sorts after them all)."""
    payload = {k: row.get(k) for k in LOGGED_KEYS}
    if row.get("tool_trace") is not None:
        payload["tool_trace"] = row["tool_trace"]
    return payload


def writer(ctx: AppContext) -> LogWriter:
    return ctx.a2a.log_writer


async def close_writer(ctx: AppContext) -> None:
    await ctx.a2a.log_writer.close()
