"""SQL for the `workspaces` table and its satellites. Status changes go through lifecycle.py instead."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.engine import dialect_insert
from workspace_server.db.schema import (
    canvas_layouts,
    canvas_viewport,
    metadata,
    workspace_config,
    workspace_secrets,
    workspaces,
)
from workspace_server.workspaces.status import Status

VIEWPORT_ID = "00000000-0000-0000-0000-000000000001"


async def insert_workspace(
    conn: AsyncConnection,
    *,
    id: str,
    name: str,
    role: str | None = None,
    tier: int = 3,
    runtime: str = "langgraph",
    status: str = Status.PROVISIONING,
    parent_id: str | None = None,
    source_bundle_id: str | None = None,
    **columns: Any,
) -> None:
    now = utcnow()
    await conn.execute(
        sa.insert(workspaces).values(
            id=id,
            name=name,
            role=role or None,
            tier=tier,
            runtime=runtime,
            status=status,
            parent_id=parent_id,
            source_bundle_id=source_bundle_id,
            awareness_namespace=f"workspace:{id}",
            created_at=now,
            updated_at=now,
            **columns,
        )
    )


async def get_workspace(conn: AsyncConnection, ws_id: str) -> Row[Any] | None:
    return (await conn.execute(sa.select(workspaces).where(workspaces.c.id == ws_id))).first()


# ---- reads for the list / get views ----

_w, _cl = workspaces, canvas_layouts
_VIEW_COLUMNS = (
    _w.c.id,
    _w.c.name,
    _w.c.role,
    _w.c.tier,
    _w.c.status,
    _w.c.agent_card,
    _w.c.url,
    _w.c.parent_id,
    _w.c.active_tasks,
    _w.c.max_concurrent_tasks,
    _w.c.last_error_rate,
    _w.c.last_sample_error,
    _w.c.uptime_seconds,
    _w.c.current_task,
    _w.c.runtime,
    _w.c.workspace_dir,
    _w.c.budget_limit,
    _w.c.monthly_spend,
    _w.c.last_outbound_at,
    _cl.c.x,
    _cl.c.y,
    _cl.c.collapsed,
)
_VIEW_FROM = _w.outerjoin(_cl, _cl.c.workspace_id == _w.c.id)


async def list_workspace_views(conn: AsyncConnection) -> Sequence[Any]:
    q = (
        sa.select(*_VIEW_COLUMNS)
        .select_from(_VIEW_FROM)
        .where(_w.c.status != Status.REMOVED)
        .order_by(_w.c.created_at, _w.c.id)
    )
    return (await conn.execute(q)).all()


async def get_workspace_view(conn: AsyncConnection, ws_id: str) -> Any | None:
    q = sa.select(*_VIEW_COLUMNS).select_from(_VIEW_FROM).where(_w.c.id == ws_id)
    return (await conn.execute(q)).first()


async def workspace_status(conn: AsyncConnection, ws_id: str) -> str | None:
    """The row's status (removed rows included), or None when there is no row."""
    q = sa.select(workspaces.c.status).where(workspaces.c.id == ws_id)
    status: str | None = (await conn.execute(q)).scalar_one_or_none()
    return status


# ---- hierarchy ----


async def live_children(conn: AsyncConnection, ws_id: str) -> list[tuple[str, str]]:
    """(id, name) of the direct children that are not removed."""
    q = (
        sa.select(workspaces.c.id, workspaces.c.name)
        .where(workspaces.c.parent_id == ws_id, workspaces.c.status != Status.REMOVED)
        .order_by(workspaces.c.created_at, workspaces.c.id)
    )
    return [(r.id, r.name) for r in (await conn.execute(q)).all()]


async def live_descendants(conn: AsyncConnection, ws_id: str) -> list[str]:
    """Every non-removed descendant at any depth, breadth-first (children before grandchildren).

    Done level by level rather than with a recursive CTE so a parent cycle (PATCH does not forbid one)
    terminates instead of recursing forever.
    """
    seen = {ws_id}
    out: list[str] = []
    frontier = [ws_id]
    while frontier:
        q = (
            sa.select(workspaces.c.id)
            .where(workspaces.c.parent_id.in_(frontier), workspaces.c.status != Status.REMOVED)
            .order_by(workspaces.c.created_at, workspaces.c.id)
        )
        nxt = [i for i in (await conn.execute(q)).scalars().all() if i not in seen]
        seen.update(nxt)
        out.extend(nxt)
        frontier = nxt
    return out


# ---- single-column writes used by PATCH ----


async def update_columns(conn: AsyncConnection, ws_id: str, **values: Any) -> None:
    await conn.execute(
        sa.update(workspaces).where(workspaces.c.id == ws_id).values(updated_at=utcnow(), **values)
    )


async def workspace_exists(conn: AsyncConnection, ws_id: str, *, include_removed: bool = True) -> bool:
    q = sa.select(workspaces.c.id).where(workspaces.c.id == ws_id)
    if not include_removed:
        q = q.where(workspaces.c.status != Status.REMOVED)
    return (await conn.execute(q)).first() is not None


# ---- canvas layout and viewport ----


def _upsert(table: sa.Table, conn: AsyncConnection, values: dict[str, Any], keys: list[str]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE for the columns in values (Postgres and SQLite alike)."""
    stmt = dialect_insert(conn, table).values(**values)
    update = {k: stmt.excluded[k] for k in values if k not in keys}
    return stmt.on_conflict_do_update(index_elements=keys, set_=update)


async def upsert_layout(conn: AsyncConnection, ws_id: str, **values: Any) -> None:
    await conn.execute(_upsert(canvas_layouts, conn, {"workspace_id": ws_id, **values}, ["workspace_id"]))


async def delete_layouts(conn: AsyncConnection, ws_ids: list[str]) -> None:
    await conn.execute(sa.delete(canvas_layouts).where(canvas_layouts.c.workspace_id.in_(ws_ids)))


async def get_viewport(conn: AsyncConnection) -> Any | None:
    q = sa.select(canvas_viewport.c.x, canvas_viewport.c.y, canvas_viewport.c.zoom).where(
        canvas_viewport.c.id == VIEWPORT_ID
    )
    return (await conn.execute(q)).first()


async def save_viewport(conn: AsyncConnection, x: float, y: float, zoom: float) -> None:
    values = {"id": VIEWPORT_ID, "x": x, "y": y, "zoom": zoom, "saved_at": utcnow()}
    await conn.execute(_upsert(canvas_viewport, conn, values, ["id"]))


# ---- workspace_config ----


async def get_config(conn: AsyncConnection, ws_id: str) -> Any | None:
    q = sa.select(workspace_config.c.data).where(workspace_config.c.workspace_id == ws_id)
    row = (await conn.execute(q)).first()
    return None if row is None else row.data


async def put_config(conn: AsyncConnection, ws_id: str, data: dict[str, Any]) -> None:
    """Replace the config document."""
    values = {"workspace_id": ws_id, "data": data, "updated_at": utcnow()}
    await conn.execute(_upsert(workspace_config, conn, values, ["workspace_id"]))


async def merge_config(conn: AsyncConnection, ws_id: str, patch: dict[str, Any]) -> None:
    """Shallow merge (`data || patch`). Atomic on Postgres; on SQLite the caller serialises writers."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(workspace_config).values(workspace_id=ws_id, data=patch, updated_at=utcnow())
        merged = workspace_config.c.data.op("||")(sa.cast(stmt.excluded.data, JSONB))
        stmt = stmt.on_conflict_do_update(
            index_elements=["workspace_id"], set_={"data": merged, "updated_at": stmt.excluded.updated_at}
        )
        await conn.execute(stmt)
        return
    current = await get_config(conn, ws_id)
    base = dict(current) if isinstance(current, dict) else {}
    base.update(patch)
    await put_config(conn, ws_id, base)


# ---- secrets ----


async def upsert_secret(conn: AsyncConnection, ws_id: str, key: str, stored: bytes, version: int) -> None:
    now = utcnow()
    values = {
        "id": new_id(),
        "workspace_id": ws_id,
        "key": key,
        "encrypted_value": stored,
        "encryption_version": version,
        "created_at": now,
        "updated_at": now,
    }
    stmt = _upsert(workspace_secrets, conn, values, ["workspace_id", "key"])
    await conn.execute(stmt)


# ---- budget ----


async def get_budget(conn: AsyncConnection, ws_id: str) -> Any | None:
    """(budget_limit, monthly_spend) of a non-removed workspace."""
    q = sa.select(workspaces.c.budget_limit, workspaces.c.monthly_spend).where(
        workspaces.c.id == ws_id, workspaces.c.status != Status.REMOVED
    )
    return (await conn.execute(q)).first()


# ---- delete cascade helpers ----


async def disable_schedules(conn: AsyncConnection, ws_ids: list[str]) -> None:
    """Disable schedules of deleted workspaces (#1027), once a schedules table exists."""
    table = metadata.tables.get("workspace_schedules")
    if table is None or "enabled" not in table.c or "workspace_id" not in table.c:
        return
    values: dict[str, Any] = {"enabled": False}
    if "updated_at" in table.c:
        values["updated_at"] = utcnow()
    await conn.execute(
        sa.update(table).where(table.c.workspace_id.in_(ws_ids), table.c.enabled.is_(True)).values(**values)
    )


def _workspace_refs() -> list[tuple[sa.Table, sa.Column[Any]]]:
    """Every (table, column) holding a foreign key to workspaces.id."""
    refs: list[tuple[sa.Table, sa.Column[Any]]] = []
    for table in metadata.sorted_tables:
        for col in table.c:
            if any(fk.column is workspaces.c.id for fk in col.foreign_keys):
                refs.append((table, col))
    return refs


async def purge_workspaces(conn: AsyncConnection, ws_ids: Iterable[str]) -> None:
    """Hard-delete workspaces and every row that points at them.

    Driven by the schema rather than a table list, so tables added later are covered: rows whose
    `workspace_id` (or any other NOT NULL reference) names a purged workspace are deleted; nullable
    references elsewhere (parent_id, forwarded_to, org_id, …) are set to NULL. Tables whose workspace_id
    carries no foreign key (structure_events) are the audit trail and are kept.
    """
    ids = list(ws_ids)
    for table, col in reversed(_workspace_refs()):
        if table is workspaces:
            await conn.execute(sa.update(table).where(col.in_(ids)).values({col.name: None}))
        elif col.name == "workspace_id" or not col.nullable:
            await conn.execute(sa.delete(table).where(col.in_(ids)))
        else:
            await conn.execute(sa.update(table).where(col.in_(ids)).values({col.name: None}))
    await conn.execute(sa.delete(workspaces).where(workspaces.c.id.in_(ids)))
