"""SQL for `workspace_secrets` and `global_secrets` (spec 05 §1). Values arrive here already encrypted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.engine import dialect_insert
from workspace_server.db.schema import global_secrets, workspace_secrets, workspaces
from workspace_server.workspaces.status import Status

# statuses whose container must not be (re)started because a secret changed (spec 05 §1 Rules)
NO_RESTART_STATUSES = (Status.REMOVED, Status.PAUSED, Status.HIBERNATED, Status.HIBERNATING)


@dataclass(frozen=True)
class StoredSecret:
    key: str
    value: bytes
    version: int


@dataclass(frozen=True)
class WorkspaceNode:
    parent_id: str | None
    status: str
    runtime: str


def _upsert(conn: AsyncConnection, table: sa.Table, values: dict[str, Any], keys: list[str]) -> Any:
    """INSERT … ON CONFLICT DO UPDATE of the value columns only: id and created_at survive a rewrite."""
    stmt = dialect_insert(conn, table).values(**values)
    changing = ("encrypted_value", "encryption_version", "updated_at")
    return stmt.on_conflict_do_update(index_elements=keys, set_={k: stmt.excluded[k] for k in changing})


def _row_values(stored: bytes, version: int) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id(),
        "encrypted_value": stored,
        "encryption_version": version,
        "created_at": now,
        "updated_at": now,
    }


def _stored(rows: Sequence[Any]) -> list[StoredSecret]:
    return [StoredSecret(r.key, bytes(r.encrypted_value), int(r.encryption_version)) for r in rows]


# ---- workspace scope ----


async def workspace_listing(conn: AsyncConnection, ws_id: str) -> Sequence[Any]:
    t = workspace_secrets
    q = sa.select(t.c.key, t.c.created_at, t.c.updated_at).where(t.c.workspace_id == ws_id).order_by(t.c.key)
    return (await conn.execute(q)).all()


async def workspace_values(conn: AsyncConnection, ws_id: str) -> list[StoredSecret]:
    t = workspace_secrets
    q = (
        sa.select(t.c.key, t.c.encrypted_value, t.c.encryption_version)
        .where(t.c.workspace_id == ws_id)
        .order_by(t.c.key)
    )
    return _stored((await conn.execute(q)).all())


async def workspace_secret(conn: AsyncConnection, ws_id: str, key: str) -> StoredSecret | None:
    t = workspace_secrets
    q = sa.select(t.c.key, t.c.encrypted_value, t.c.encryption_version).where(
        t.c.workspace_id == ws_id, t.c.key == key
    )
    found = _stored((await conn.execute(q)).all())
    return found[0] if found else None


async def upsert_workspace_secret(
    conn: AsyncConnection, ws_id: str, key: str, stored: bytes, version: int
) -> None:
    values = {"workspace_id": ws_id, "key": key, **_row_values(stored, version)}
    await conn.execute(_upsert(conn, workspace_secrets, values, ["workspace_id", "key"]))


async def delete_workspace_secret(conn: AsyncConnection, ws_id: str, key: str) -> int:
    t = workspace_secrets
    result = await conn.execute(sa.delete(t).where(t.c.workspace_id == ws_id, t.c.key == key))
    return int(result.rowcount or 0)


# ---- global scope ----


async def global_listing(conn: AsyncConnection) -> Sequence[Any]:
    t = global_secrets
    return (await conn.execute(sa.select(t.c.key, t.c.created_at, t.c.updated_at).order_by(t.c.key))).all()


async def global_values(conn: AsyncConnection) -> list[StoredSecret]:
    t = global_secrets
    q = sa.select(t.c.key, t.c.encrypted_value, t.c.encryption_version).order_by(t.c.key)
    return _stored((await conn.execute(q)).all())


async def upsert_global_secret(conn: AsyncConnection, key: str, stored: bytes, version: int) -> None:
    values = {"key": key, **_row_values(stored, version)}
    await conn.execute(_upsert(conn, global_secrets, values, ["key"]))


async def delete_global_secret(conn: AsyncConnection, key: str) -> int:
    result = await conn.execute(sa.delete(global_secrets).where(global_secrets.c.key == key))
    return int(result.rowcount or 0)


# ---- who a change affects ----


async def workspace_tree(conn: AsyncConnection) -> dict[str, WorkspaceNode]:
    """Every workspace's parent, status and runtime: enough to apply the restart rules in one query."""
    w = workspaces
    rows = (await conn.execute(sa.select(w.c.id, w.c.parent_id, w.c.status, w.c.runtime))).all()
    return {r.id: WorkspaceNode(r.parent_id, r.status, r.runtime or "") for r in rows}


async def overriding_workspaces(conn: AsyncConnection, key: str) -> set[str]:
    """Workspaces whose own row for `key` shadows the global one."""
    t = workspace_secrets
    return {r.workspace_id for r in (await conn.execute(sa.select(t.c.workspace_id).where(t.c.key == key)))}
