"""SQL for `platform_instructions`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import platform_instructions

p = platform_instructions
# Global rows first, then the workspace's own; the highest priority first within a scope.
_SCOPE_RANK = sa.case((p.c.scope == "global", 0), (p.c.scope == "workspace", 2), else_=1)


def _for_workspace(ws_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        p.c.enabled.is_(True),
        sa.or_(p.c.scope == "global", sa.and_(p.c.scope == "workspace", p.c.scope_target == ws_id)),
    )


async def list_for_workspace(conn: AsyncConnection, ws_id: str) -> list[Row[Any]]:
    stmt = (
        sa.select(p)
        .where(_for_workspace(ws_id))
        .order_by(_SCOPE_RANK, p.c.priority.desc(), p.c.created_at, p.c.id)
    )
    return list((await conn.execute(stmt)).all())


async def list_all(conn: AsyncConnection, scope: str) -> list[Row[Any]]:
    stmt = sa.select(p)
    if scope:
        stmt = stmt.where(p.c.scope == scope)
    stmt = stmt.order_by(p.c.scope, p.c.priority.desc(), p.c.created_at, p.c.id)
    return list((await conn.execute(stmt)).all())


async def insert(
    conn: AsyncConnection, *, scope: str, scope_target: str | None, title: str, content: str, priority: int
) -> str:
    row_id, now = new_id(), utcnow()
    await conn.execute(
        sa.insert(p).values(
            id=row_id,
            scope=scope,
            scope_target=scope_target,
            title=title,
            content=content,
            priority=priority,
            enabled=True,
            created_at=now,
            updated_at=now,
        )
    )
    return row_id


async def update(conn: AsyncConnection, row_id: str, changes: dict[str, Any]) -> bool:
    """Apply the given columns (and a new updated_at); False when no such row."""
    stmt = sa.update(p).where(p.c.id == row_id).values(**changes, updated_at=utcnow())
    return bool((await conn.execute(stmt)).rowcount)


async def delete(conn: AsyncConnection, row_id: str) -> bool:
    return bool((await conn.execute(sa.delete(p).where(p.c.id == row_id))).rowcount)
