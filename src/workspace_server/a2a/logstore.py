"""Where the log writer's batches go (`logwriter.py`): one `write(rows, outbound, lines)` per flush.

Postgres (`PgActivitySink`): the writer's own asyncpg connection, not the engine's pool, and one
`INSERT … SELECT FROM jsonb_to_recordset(<the batch as one JSON document>)` per flush. The document is
the rows' journal lines joined (`journal.encode_entry`: each row is encoded once, when it is journaled),
so a flush encodes nothing per row. Measured: a pooled SQLAlchemy transaction with an executemany cost
~0.6 ms of CPU a flush of one row (the pool checkout alone ~0.2 ms); one array per column through
`unnest` ~0.1 ms, plus ~6 µs a row for the driver's array encoding, which this document does not need.

SQLite, the row-by-row retry and the restore of journaled rows (`SqlActivitySink`): the cached
SQLAlchemy INSERT in one transaction; a restore skips rows already stored (ON CONFLICT (id) DO NOTHING).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.a2a.journal import encode_entry
from workspace_server.common.time import utcnow
from workspace_server.db.engine import PG_CONNECT_TIMEOUT_SECONDS
from workspace_server.db.schema import activity_logs, workspaces

log = logging.getLogger(__name__)

JSON_COLUMNS = ("request_body", "response_body", "tool_trace")


class ActivitySink(Protocol):
    async def write(
        self, rows: list[dict[str, Any]], outbound: set[str], lines: Sequence[bytes] = ...
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
        lines: Sequence[bytes] = (),
        restore: bool = False,
    ) -> None:
        """`restore`: rows that may be stored already (from a journal) are skipped by id. `lines` is not
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


_COLUMNS = ", ".join(c.name for c in activity_logs.c)
# built once from the table's own column names and types: no value is ever spliced into it. A status the
# row leaves out takes the column's default ('ok'), as the SQLAlchemy insert binds it.
_VALUES = ", ".join(
    "COALESCE(r.status, 'ok')" if c.name == "status" else f"r.{c.name}" for c in activity_logs.c
)
_TYPES = ", ".join(f"{c.name} {_pg_type(c)}" for c in activity_logs.c)
_DOCUMENT_INSERT = (
    f"INSERT INTO activity_logs ({_COLUMNS}) SELECT {_VALUES} "  # noqa: S608
    f"FROM jsonb_to_recordset($1::jsonb) AS r({_TYPES})"
)
_OUTBOUND = "UPDATE workspaces SET last_outbound_at = $1 WHERE id = ANY($2::text[])"


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
        self, rows: list[dict[str, Any]], outbound: set[str], lines: Sequence[bytes] = ()
    ) -> None:
        """`lines`: each row's journal entry (`encode_entry`): its JSON. Encoded here when not given."""
        if not rows and not outbound:
            return
        conn = await self._connection()
        try:
            if rows:
                await conn.execute(_DOCUMENT_INSERT, _document(rows, lines))
            if outbound:
                await conn.execute(_OUTBOUND, utcnow(), sorted(outbound))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # no goodbye round trip: it may be the broken one


def _document(rows: list[dict[str, Any]], lines: Sequence[bytes]) -> str:
    """The rows as one JSON array: their journal lines, or (not given, or an agent's reply spliced in as
    bytes that are not strict UTF-8) the row encoded from its values."""
    if len(lines) != len(rows):
        lines = [encode_entry(r, None) for r in rows]
    try:
        return "[" + b",".join(lines).decode() + "]"
    except UnicodeDecodeError:
        return "[" + ",".join(_text(line, row) for line, row in zip(lines, rows, strict=True)) + "]"


def _text(line: bytes, row: dict[str, Any]) -> str:
    try:
        return line.decode()
    except UnicodeDecodeError:
        return encode_entry(row, None).decode()


def sink_for(engine: AsyncEngine) -> ActivitySink:
    return PgActivitySink(engine) if engine.dialect.name == "postgresql" else SqlActivitySink(engine)
