"""SQL for `workspace_memory`.

Every write is one statement that decides on its own: the guarded update carries its `version = N` in
the WHERE clause, and creates go through the unique (workspace_id, key), so two writers holding the same
version (or both creating a key) can never both succeed, on Postgres or SQLite.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.db.engine import dialect_insert
from workspace_server.db.schema import workspace_memory

m = workspace_memory
_ENTRY = (m.c.key, m.c.value, m.c.version, m.c.expires_at, m.c.updated_at)
_KEYS = ["workspace_id", "key"]


def _live(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(m.c.expires_at.is_(None), m.c.expires_at > now)


def _insert(conn: AsyncConnection, values: dict[str, Any]) -> Any:
    return dialect_insert(conn, m).values(**values)


def _new_row(ws_id: str, key: str, value: Any, expires_at: datetime | None, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "workspace_id": ws_id,
        "key": key,
        "value": value,
        "expires_at": expires_at,
        "updated_at": now,
        "version": 1,
    }


async def list_live(conn: AsyncConnection, ws_id: str, now: datetime) -> list[Any]:
    q = sa.select(*_ENTRY).where(m.c.workspace_id == ws_id, _live(now)).order_by(m.c.key)
    return list((await conn.execute(q)).all())


async def get_live(conn: AsyncConnection, ws_id: str, key: str, now: datetime) -> Any | None:
    q = sa.select(*_ENTRY).where(m.c.workspace_id == ws_id, m.c.key == key, _live(now))
    return (await conn.execute(q)).first()


async def upsert(
    conn: AsyncConnection, ws_id: str, key: str, value: Any, expires_at: datetime | None, now: datetime
) -> int:
    """Last write wins: create at version 1 or overwrite and bump the version. Returns the new version."""
    stmt = _insert(conn, _new_row(ws_id, key, value, expires_at, now))
    stmt = stmt.on_conflict_do_update(
        index_elements=_KEYS,
        set_={
            "value": stmt.excluded.value,
            "expires_at": stmt.excluded.expires_at,
            "updated_at": stmt.excluded.updated_at,
            "version": m.c.version + 1,
        },
    ).returning(m.c.version)
    return int((await conn.execute(stmt)).scalar_one())


async def update_if_version(
    conn: AsyncConnection,
    ws_id: str,
    key: str,
    value: Any,
    expires_at: datetime | None,
    now: datetime,
    expected: int,
) -> int | None:
    """Overwrite only while the row is at `expected` (expired or not); the new version, else None."""
    stmt = (
        sa.update(m)
        .where(m.c.workspace_id == ws_id, m.c.key == key, m.c.version == expected)
        .values(value=value, expires_at=expires_at, updated_at=now, version=m.c.version + 1)
        .returning(m.c.version)
    )
    version = (await conn.execute(stmt)).scalar_one_or_none()
    return None if version is None else int(version)


async def create_if_absent(
    conn: AsyncConnection, ws_id: str, key: str, value: Any, expires_at: datetime | None, now: datetime
) -> int | None:
    """Create at version 1 unless the key exists (expired or not); 1, or None when it already existed."""
    stmt = _insert(conn, _new_row(ws_id, key, value, expires_at, now))
    stmt = stmt.on_conflict_do_nothing(index_elements=_KEYS).returning(m.c.version)
    version = (await conn.execute(stmt)).scalar_one_or_none()
    return None if version is None else int(version)


async def current_version(conn: AsyncConnection, ws_id: str, key: str) -> int | None:
    """The stored version, expired rows included (they still count for the guard); None when absent."""
    q = sa.select(m.c.version).where(m.c.workspace_id == ws_id, m.c.key == key)
    version = (await conn.execute(q)).scalar_one_or_none()
    return None if version is None else int(version)


async def delete(conn: AsyncConnection, ws_id: str, key: str) -> None:
    await conn.execute(sa.delete(m).where(m.c.workspace_id == ws_id, m.c.key == key))
