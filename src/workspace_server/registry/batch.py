"""Heartbeats on Postgres, coalesced: the heartbeats in flight share one statement and one round trip.

Every agent beats every 30 s, so at scale the heartbeat is the server's hottest write. Per heartbeat
the work is: the bearer check (with the grandfather rule), the column UPDATE returning the row as it
was, the throttled `last_used_at` touch, and "is anything queued for it?". One statement does all of
that for a whole batch (`HEARTBEAT_BATCH_SQL`), so a busy server pays one round trip, one SQLAlchemy
execution and one commit for many heartbeats instead of two or three each.

Batching is natural, not timed: the first heartbeat of a quiet moment goes out at once, alone; while a
batch is in flight the next ones gather and leave together when it returns. A request is answered only
after its batch committed. Nothing changes on SQLite (one writer; the per-step path stays).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workspace_server.auth.tokens import LAST_USED_RESOLUTION
from workspace_server.authz import HEARTBEAT_GATE_CTES
from workspace_server.common.tasks import TaskSupervisor
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.registry.store import HeartbeatSnapshot, clamp_spend

log = logging.getLogger(__name__)

MAX_BATCH = 256  # rows per statement; more wait for the next round

# Rows are locked in id order (`old`), so two batches (two server processes) never deadlock on each other.
# Who may beat for a workspace is the authz layer's rule, in SQL: its `tok` and `gate` CTEs
# (`authz.HEARTBEAT_GATE_CTES`) mark each beat `denied` or not; a denied beat writes nothing.
HEARTBEAT_BATCH_SQL = sa.text(
    "".join(
        (
            """
WITH hb AS (
  SELECT * FROM unnest(
    CAST(:ords AS int[]), CAST(:ids AS text[]), CAST(:hashes AS bytea[]), CAST(:error_rates AS float8[]),
    CAST(:sample_errors AS text[]), CAST(:active_tasks AS int[]), CAST(:uptimes AS int[]),
    CAST(:current_tasks AS text[]), CAST(:spends AS bigint[])
  ) AS hb(ord, id, token_hash, error_rate, sample_error, active_tasks, uptime_seconds, current_task, spend)
),
""",
            HEARTBEAT_GATE_CTES,
            """,
old AS (
  SELECT w.id, w.status, w.current_task, w.max_concurrent_tasks
  FROM workspaces w JOIN gate g ON g.id = w.id AND NOT g.denied
  WHERE w.status != 'removed'
  ORDER BY w.id
  FOR UPDATE OF w
),
upd AS (
  UPDATE workspaces w SET
    last_heartbeat_at = :now, updated_at = :now,
    last_error_rate = g.error_rate, last_sample_error = g.sample_error,
    active_tasks = g.active_tasks, uptime_seconds = g.uptime_seconds, current_task = g.current_task,
    idle_since = CASE WHEN g.active_tasks > 0 THEN NULL ELSE COALESCE(w.idle_since, :now) END,
    monthly_spend = CASE WHEN g.spend > 0 THEN g.spend ELSE w.monthly_spend END
  FROM gate g JOIN old o ON o.id = g.id
  WHERE w.id = g.id
  RETURNING g.ord, o.status, o.current_task, o.max_concurrent_tasks
),
touch AS (
  UPDATE workspace_auth_tokens t SET last_used_at = :now
  FROM tok
  WHERE t.id = tok.token_id AND (tok.last_used_at IS NULL OR tok.last_used_at < :touch_before)
)
SELECT g.ord, g.denied, u.status, u.current_task, u.max_concurrent_tasks,
       u.ord IS NOT NULL AND EXISTS (
         SELECT 1 FROM a2a_queue q WHERE q.workspace_id = g.id AND q.status IN ('queued', 'dispatched')
       ) AS queue_pending
FROM gate g LEFT JOIN upd u ON u.ord = g.ord
""",
        )
    )
)


class Beat(NamedTuple):
    """One heartbeat as the route parsed it. `token_hash`: sha256 of the bearer, None without one.
    (A named tuple: built for every heartbeat, at a third of a frozen dataclass's cost.)"""

    workspace_id: str
    token_hash: bytes | None
    error_rate: float
    sample_error: str
    active_tasks: int
    uptime_seconds: int
    current_task: str
    monthly_spend: int


class BeatResult(NamedTuple):
    denied: bool  # a live token exists and the bearer is not one of them: nothing was written
    snapshot: HeartbeatSnapshot | None  # the row before the write; None when unknown or removed
    queue_pending: bool  # A2A items queued or in flight for this workspace
    at: str  # the moment written as last_heartbeat_at, RFC 3339: the batch's, rendered once for all its beats


class BatchFailed(Exception):
    """The shared statement failed; the caller falls back to the per-step path for its heartbeat."""


_Waiter = tuple[Beat, "asyncio.Future[BeatResult]"]


class HeartbeatBatcher:
    def __init__(
        self, engine: AsyncEngine, *, strict: bool = False, tasks: TaskSupervisor | None = None
    ) -> None:
        self._engine = engine
        self._tasks = (
            tasks if tasks is not None else TaskSupervisor()
        )  # the app's, or one of its own  # an AUTOCOMMIT engine: the statement is its own transaction
        self._strict = strict  # no grandfathering: a heartbeat needs a live token of its workspace
        self._pending: list[_Waiter] = []
        self._runner: asyncio.Task[None] | None = None
        # While heartbeats keep coming the runner keeps one pooled connection (a checkout and return cost
        # as much CPU as two dozen heartbeats' share of a batch); it goes back when the queue is empty.
        self._held: AsyncConnection | None = None

    async def submit(self, beat: Beat) -> BeatResult:
        fut: asyncio.Future[BeatResult] = asyncio.get_running_loop().create_future()
        self._pending.append((beat, fut))
        if self._runner is None:
            self._runner = self._tasks.spawn("heartbeat-batcher", self._run())
        return await fut

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        for _beat, fut in self._pending:
            if not fut.done():
                fut.set_exception(BatchFailed("server shutting down"))
        self._pending.clear()

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._settle(self._take())
        finally:
            self._runner = None
            await self._release()

    async def _driver(self) -> Any:
        """The held connection's driver (asyncpg), checked out from the pool when none is held."""
        if self._held is None:
            conn = self._engine.connect()
            await conn.start()
            self._held = conn
        driver = (await self._held.get_raw_connection()).driver_connection
        if driver is None:  # a pooled connection always has one; typed as optional
            raise BatchFailed("no driver connection")
        return driver

    async def _release(self, *, dead: bool = False) -> None:
        """Return the held connection to the pool; `dead`: invalidated first, as SQLAlchemy does with a
        connection a statement found closed."""
        conn, self._held = self._held, None
        if conn is None:
            return
        if dead:
            await conn.invalidate()
        await conn.close()

    async def _settle(self, batch: list[_Waiter]) -> None:
        """Run one batch and answer its waiters; whatever goes wrong (a DB error, cancellation at
        shutdown), no waiter is left hanging: each gets BatchFailed and retries per step."""
        try:
            results = await self._execute([beat for beat, _ in batch])
        except BaseException as exc:
            for _beat, fut in batch:
                if not fut.done():
                    fut.set_exception(BatchFailed(str(exc) or type(exc).__name__))
            if not isinstance(exc, Exception):
                raise  # cancellation
            log.warning("registry: heartbeat batch of %d failed (%s); retried per step", len(batch), exc)
            return
        for (_beat, fut), result in zip(batch, results, strict=True):
            if not fut.done():  # the request may have gone (client disconnect)
                fut.set_result(result)

    def _take(self) -> list[_Waiter]:
        """Up to MAX_BATCH heartbeats of distinct workspaces (an UPDATE … FROM writes a row once); the
        rest keep their order for the next round."""
        batch: list[_Waiter] = []
        rest: list[_Waiter] = []
        seen: set[str] = set()
        for waiter in self._pending:
            ws_id = waiter[0].workspace_id
            if len(batch) >= MAX_BATCH or ws_id in seen or waiter[1].done():
                if not waiter[1].done():
                    rest.append(waiter)
                continue
            seen.add(ws_id)
            batch.append(waiter)
        self._pending = rest
        return batch

    async def _execute(self, beats: Sequence[Beat]) -> list[BeatResult]:
        """One statement for `beats`, sent on the held pooled connection's driver (asyncpg) directly:
        SQLAlchemy's execution and result layers cost as much as the driver's own work for a batch, and
        nothing of theirs is needed for one prebuilt statement. After a failure the connection goes back
        to the pool (invalidated if the statement found it closed); the next batch checks one out."""
        now = utcnow()
        sql, names = _positional(HEARTBEAT_BATCH_SQL)
        params = {**_params(beats, now), "strict": self._strict}
        driver = await self._driver()
        try:
            rows = await driver.fetch(sql, *[params[name] for name in names])
        except BaseException:
            await self._release(dead=driver.is_closed())
            raise
        by_ord = {row["ord"]: row for row in rows}
        at = rfc3339(now) or ""
        return [_result(by_ord.get(i), at) for i in range(len(beats))]


# `:name` parameters of a text statement (not `::type` casts)
_PARAM = re.compile(r"(?<![:\w]):([a-z_]+)\b")


@functools.lru_cache(maxsize=4)
def _positional(statement: sa.TextClause) -> tuple[str, tuple[str, ...]]:
    """A text statement as the driver takes it: `:name` becomes `$n`; and the names in `$n` order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, statement.text), tuple(names)


def _params(beats: Sequence[Beat], now: datetime) -> dict[str, Any]:
    return {
        "ords": list(range(len(beats))),
        "ids": [b.workspace_id for b in beats],
        "hashes": [b.token_hash for b in beats],
        "error_rates": [b.error_rate for b in beats],
        "sample_errors": [b.sample_error for b in beats],
        "active_tasks": [b.active_tasks for b in beats],
        "uptimes": [b.uptime_seconds for b in beats],
        "current_tasks": [b.current_task for b in beats],
        "spends": [clamp_spend(b.monthly_spend) for b in beats],
        "now": now,
        "touch_before": now - LAST_USED_RESOLUTION,
    }


def _result(row: Any, at: str) -> BeatResult:
    if row is None:  # cannot happen (every input row is selected); treat as unknown
        return BeatResult(denied=False, snapshot=None, queue_pending=False, at=at)
    snapshot = None
    status = row["status"]
    if status is not None:
        snapshot = HeartbeatSnapshot(status, row["current_task"] or "", row["max_concurrent_tasks"] or 1)
    return BeatResult(bool(row["denied"]), snapshot, bool(row["queue_pending"]), at)
