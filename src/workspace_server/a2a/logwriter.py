"""Batched side effects of proxied calls (spec 04 §1.8): `a2a_receive` rows and `last_outbound_at`.

A busy proxy writes one activity row per call. Writing each in its own transaction (pool checkout,
BEGIN, INSERT, COMMIT) cost more than the proxying itself, so rows are buffered for at most
FLUSH_DELAY seconds and written together: one multi-row INSERT and one UPDATE per flush. As with the
reference's goroutines, rows not yet flushed are lost if the process dies; `close()` flushes on shutdown.
ACTIVITY_LOGGED is broadcast after the rows are stored (nothing is announced that was not written).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from workspace_server.common.ids import new_id
from workspace_server.common.jsonnum import contains_nul, scrub_nul
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.db.schema import activity_logs, workspaces

log = logging.getLogger(__name__)

FLUSH_DELAY = 0.02  # seconds a row may wait for companions
MAX_BATCH = 200
JSON_COLUMNS = ("request_body", "response_body", "tool_trace")
# ACTIVITY_LOGGED payload keys (spec 04 §3), sorted as Go marshals a map
LOGGED_KEYS = ("activity_type", "duration_ms", "method", "source_id", "status", "summary", "target_id")


@dataclass
class _Pending:
    rows: list[dict[str, Any]] = field(default_factory=list)
    outbound: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.rows or self.outbound)


class LogWriter:
    """Built with the A2A parts (`a2a.make_parts`), bound to its app by the composition root."""

    def __init__(self) -> None:
        self._ctx: AppContext | None = None
        self._pending = _Pending()
        self._task: asyncio.Task[None] | None = None

    def bind(self, ctx: AppContext) -> None:
        self._ctx = ctx

    @property
    def ctx(self) -> AppContext:
        if self._ctx is None:
            raise RuntimeError("LogWriter used before the app bound it")
        return self._ctx

    def add(self, row: dict[str, Any], outbound_caller: str | None = None) -> None:
        """Queue an activity row (columns of `activity_logs`) and optionally a caller to stamp."""
        self._pending.rows.append(row)
        if outbound_caller:
            self._pending.outbound.add(outbound_caller)
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.ctx.tasks.spawn("a2a-log-writer", self._run())

    async def _run(self) -> None:
        while self._pending:
            await asyncio.sleep(FLUSH_DELAY)
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, _Pending()
        rows = batch.rows[:MAX_BATCH]
        if len(batch.rows) > MAX_BATCH:  # the rest goes out on the next round
            self._pending.rows.extend(batch.rows[MAX_BATCH:])
        try:
            await self._write(rows, batch.outbound)
        except Exception:
            log.exception("a2a: writing %d activity rows failed; retrying one by one", len(rows))
            rows = await self._write_each(rows, batch.outbound)
        for row in rows:
            await self.ctx.events.broadcast("ACTIVITY_LOGGED", row["workspace_id"], _logged_payload(row))

    async def _write(self, rows: list[dict[str, Any]], outbound: set[str]) -> None:
        if not rows and not outbound:
            return
        now = utcnow()
        values = [_db_values(r, now) for r in rows]
        async with self.ctx.engine.begin() as conn:
            if values:
                await conn.execute(_INSERT, values)  # executemany of one cached statement
            if outbound:
                # last_outbound_at only: not a lifecycle change, and updated_at stays
                stmt = sa.update(workspaces).where(workspaces.c.id.in_(sorted(outbound)))
                await conn.execute(stmt.values(last_outbound_at=now))

    async def _write_each(self, rows: list[dict[str, Any]], outbound: set[str]) -> list[dict[str, Any]]:
        """One bad row (its workspace just purged, say) must not take the batch down with it. A row that
        carries NUL characters (an A2A message may; Postgres text and jsonb cannot) is written with them
        replaced by U+FFFD rather than dropped."""
        written = []
        for row in rows:
            for candidate in _variants(row):
                try:
                    await self._write([candidate], set())
                except Exception as exc:
                    log.warning("a2a: activity row for %s not written: %s", row.get("workspace_id"), exc)
                    continue
                written.append(candidate)
                break
            else:
                log.error("a2a: activity row for %s dropped", row.get("workspace_id"))
        try:
            await self._write([], outbound)
        except Exception:
            log.exception("a2a: last_outbound_at update failed")
        return written

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending:
            before = len(self._pending.rows)
            await self.flush()
            if len(self._pending.rows) >= before:
                break


def _variants(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row, then (when it holds NUL characters) its NUL-free copy."""
    return [row] if not contains_nul(row) else [row, scrub_nul(row)]


def _db_values(row: dict[str, Any], now: Any) -> dict[str, Any]:
    """Every column bound (one statement for all rows): absent ones NULL, status 'ok' as its default."""
    return {**_ABSENT, "id": new_id(), "created_at": now, **row}


# One INSERT for every flush, compiled once: a multi-row VALUES built per flush was compiled anew each
# time (its shape changes with the row count), which cost more CPU than the rows' other work. The JSON
# columns bind None as SQL NULL, not JSON null: "present only when non-null" in GET /activity.
_NULLABLE_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_INSERT = sa.insert(activity_logs).values(
    {
        c.name: sa.bindparam(c.name, type_=_NULLABLE_JSON if c.name in JSON_COLUMNS else c.type)
        for c in activity_logs.c
    }
)
_ABSENT: dict[str, Any] = {c.name: None for c in activity_logs.c} | {"status": "ok"}


def _logged_payload(row: dict[str, Any]) -> dict[str, Any]:
    payload = {k: row.get(k) for k in LOGGED_KEYS}
    if row.get("tool_trace") is not None:
        payload["tool_trace"] = row["tool_trace"]
    return dict(sorted(payload.items()))


def writer(ctx: AppContext) -> LogWriter:
    return ctx.a2a.log_writer


async def close_writer(ctx: AppContext) -> None:
    await ctx.a2a.log_writer.close()
