"""Where the log writer's batches go (`logwriter.py`): one `write(rows, outbound)` per flush.

Postgres (`PgActivitySink`): the writer's own asyncpg connection, not the engine's pool, and one
`INSERT … SELECT FROM unnest(<one array per column>)` per flush. Measured per flush: a pooled SQLAlchemy
transaction with an executemany cost ~0.6 ms of CPU for one row, this ~0.1 ms (the pool checkout alone
was ~0.2 ms).

SQLite, the row-by-row retry and the restore of journaled rows (`SqlActivitySink`): the cached
SQLAlchemy INSERT in one transaction; a restore skips rows already stored (ON CONFLICT (id) DO NOTHING).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.common.time import utcnow
from workspace_server.db.engine import PG_CONNECT_TIMEOUT_SECONDS
from workspace_server.db.schema import activity_logs, workspaces

log = logging.getLogger(__name__)

JSON_COLUMNS = ("request_body", "response_body", "tool_trace")


RawColumns = Mapping[str, bytes]  # JSON column -> its value as JSON text (what the proxy has at hand)


class ActivitySink(Protocol):
    async def write(
        self, rows: list[dict[str, Any]], outbound: set[str], raw: Mapping[str, RawColumns] = ...
    ) -> None: ...
    async def close(self) -> None: ...


def db_values(row: dict[str, Any]) -> dict[str, Any]:
    """Every column bound (one statement for all rows): absent ones NULL, status 'ok' as its default. The
    writer gave each row its id and created_at when it journaled it."""
    return {**_ABSENT, **row}


_ABSENT: dict[str, Any] = {c.name: None for c in activity_logs.c} | {"status": "ok"}


class SqlActivitySink:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(
        self,
        rows: list[dict[str, Any]],
        outbound: set[str],
        raw: Mapping[str, RawColumns] | None = None,
        restore: bool = False,
    ) -> None:
        """`restore`: rows that may be stored already (from a journal) are skipped by id. `raw` is not
        used: SQLAlchemy binds the values themselves."""
        if not rows and not outbound:
            return
        values = [db_values(r) for r in rows]
        async with self.engine.begin() as conn:
            if values:
                insert = _RESTORE[conn.dialect.name] if restore else _INSERT
                await conn.execute(insert, values)  # executemany of one cached statement
            if outbound:
                # last_outbound_at only: not a lifecycle change, and updated_at stays
                stamp = sa.update(workspaces).where(workspaces.c.id.in_(sorted(outbound)))
                await conn.execute(stamp.values(last_outbound_at=utcnow()))

    async def close(self) -> None:
        return None


# One INSERT for every flush, compiled once (a multi-row VALUES changes shape with the row count). The
# JSON columns bind None as SQL NULL, not JSON null: "present only when non-null" in GET /activity.
_NULLABLE_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_BINDS = {
    c.name: sa.bindparam(c.name, type_=_NULLABLE_JSON if c.name in JSON_COLUMNS else c.type)
    for c in activity_logs.c
}
_INSERT = sa.insert(activity_logs).values(_BINDS)
_RESTORE = {
    "postgresql": postgresql.insert(activity_logs)
    .values(_BINDS)
    .on_conflict_do_nothing(index_elements=["id"]),
    "sqlite": sqlite.insert(activity_logs).values(_BINDS).on_conflict_do_nothing(index_elements=["id"]),
}


def _pg_type(column: sa.Column[Any]) -> str:
    if column.name in JSON_COLUMNS:
        return "jsonb"
    if isinstance(column.type, sa.Integer):
        return "int4"
    if column.name == "created_at":
        return "timestamptz"
    return "text"


_COLUMNS = [c.name for c in activity_logs.c]
# built once from the table's own column names and types: no value is ever spliced into it
_UNNEST_INSERT = "INSERT INTO activity_logs ({}) SELECT * FROM unnest({})".format(  # noqa: S608
    ", ".join(_COLUMNS),
    ", ".join(f"${i}::{_pg_type(c)}[]" for i, c in enumerate(activity_logs.c, start=1)),
)
_OUTBOUND = "UPDATE workspaces SET last_outbound_at = $1 WHERE id = ANY($2::text[])"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


class PgActivitySink:
    """One connection of its own, opened on first use and dropped after any failed exchange (the next
    flush opens a new one): a write is never left half-read on a connection someone else uses next."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            # the engine's own connect arguments (host, port, user, password, database, ssl)
            _, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
            kwargs.pop("prepared_statement_cache_size", None)
            kwargs["server_settings"] = {"application_name": "activity-writer"}
            self._conn = await asyncpg.connect(timeout=PG_CONNECT_TIMEOUT_SECONDS, **kwargs)
        return self._conn

    async def write(
        self, rows: list[dict[str, Any]], outbound: set[str], raw: Mapping[str, RawColumns] | None = None
    ) -> None:
        """`raw`: row id -> JSON columns as text already at hand, sent as they are (jsonb parses them)."""
        if not rows and not outbound:
            return
        conn = await self._connection()
        try:
            if rows:
                await conn.execute(_UNNEST_INSERT, *_arrays(rows, raw or {}))
            if outbound:
                await conn.execute(_OUTBOUND, utcnow(), sorted(outbound))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # no goodbye round trip: it may be the broken one


def _arrays(rows: list[dict[str, Any]], raw: Mapping[str, RawColumns]) -> list[list[Any]]:
    """One array per column, in the table's column order, JSON columns as their text."""
    values = [db_values(r) for r in rows]
    out = []
    for name in _COLUMNS:
        if name in JSON_COLUMNS:
            out.append([_json_text(v, name, raw.get(v["id"])) for v in values])
        else:
            out.append([v[name] for v in values])
    return out


def _json_text(values: dict[str, Any], name: str, raw: RawColumns | None) -> str | None:
    text = raw.get(name) if raw else None
    if text is not None and values[name] is not None:
        try:
            return text.decode()
        except UnicodeDecodeError:  # an agent's bytes that only decoded leniently: encode the value
            pass
    return _json(values[name])


def sink_for(engine: AsyncEngine) -> ActivitySink:
    return PgActivitySink(engine) if engine.dialect.name == "postgresql" else SqlActivitySink(engine)
