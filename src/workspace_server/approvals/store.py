"""SQL for `approval_requests`.

A decision is one conditional UPDATE (`status = 'pending'` in the WHERE clause), so an approval is decided
exactly once however many deciders race. Time bounds are computed by the caller and bound as parameters:
the same SQL on Postgres and SQLite.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.db.schema import approval_requests, workspaces

a = approval_requests
AUTO_EXPIRED_BY = "auto-expired"
PAGE = 50


async def insert(
    conn: AsyncConnection,
    *,
    ws_id: str,
    task_id: str,
    action: str,
    reason: str,
    context: dict[str, Any],
    now: datetime,
) -> str:
    row_id = new_id()
    await conn.execute(
        sa.insert(a).values(
            id=row_id,
            workspace_id=ws_id,
            task_id=task_id,
            action=action,
            reason=reason,
            context=context,
            status="pending",
            created_at=now,
        )
    )
    return row_id


async def expire_stale(
    conn: AsyncConnection, *, cutoff: datetime, now: datetime, ws_id: str | None = None
) -> None:
    """Deny every pending request created before `cutoff` (of one workspace, or all)."""
    stmt = (
        sa.update(a)
        .where(a.c.status == "pending", a.c.created_at < cutoff)
        .values(status="denied", decided_by=AUTO_EXPIRED_BY, decided_at=now)
    )
    if ws_id is not None:
        stmt = stmt.where(a.c.workspace_id == ws_id)
    await conn.execute(stmt)


async def list_for_workspace(conn: AsyncConnection, ws_id: str) -> list[Any]:
    q = (
        sa.select(
            a.c.id,
            a.c.task_id,
            a.c.action,
            a.c.reason,
            a.c.status,
            a.c.decided_by,
            a.c.decided_at,
            a.c.created_at,
        )
        .where(a.c.workspace_id == ws_id)
        .order_by(a.c.created_at.desc(), a.c.id.desc())
        .limit(PAGE)
    )
    return list((await conn.execute(q)).all())


async def list_pending(conn: AsyncConnection) -> list[Any]:
    """The newest pending requests of every workspace, with the workspace's name."""
    q = (
        sa.select(
            a.c.id,
            a.c.workspace_id,
            workspaces.c.name.label("workspace_name"),
            a.c.action,
            a.c.reason,
            a.c.status,
            a.c.created_at,
        )
        .select_from(a.join(workspaces, workspaces.c.id == a.c.workspace_id))
        .where(a.c.status == "pending")
        .order_by(a.c.created_at.desc(), a.c.id.desc())
        .limit(PAGE)
    )
    return list((await conn.execute(q)).all())


async def decide(
    conn: AsyncConnection, *, approval_id: str, ws_id: str, decision: str, decided_by: str, now: datetime
) -> bool:
    """Record the decision on a pending request of `ws_id`; False when there is none to decide."""
    stmt = (
        sa.update(a)
        .where(a.c.id == approval_id, a.c.workspace_id == ws_id, a.c.status == "pending")
        .values(status=decision, decided_by=decided_by, decided_at=now)
    )
    return bool((await conn.execute(stmt)).rowcount)
