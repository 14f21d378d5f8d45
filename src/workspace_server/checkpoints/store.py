"""SQL for `workflow_checkpoints`.

The upsert is one `INSERT … ON CONFLICT (workspace_id, workflow_id, step_name) DO UPDATE … RETURNING id`
on both databases, so two agents (or retries) writing the same step never race into a unique-key error.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.engine import dialect_insert
from workspace_server.db.schema import workflow_checkpoints

c = workflow_checkpoints
_KEY = ["workspace_id", "workflow_id", "step_name"]
_REFRESHED = ("step_index", "payload", "completed_at")


async def upsert(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    workflow_id: str,
    step_name: str,
    step_index: int,
    payload: Any,
) -> str:
    """Insert the step, or refresh step_index, payload and completed_at of the existing row; its id."""
    stmt = dialect_insert(conn, c).values(
        id=new_id(),
        workspace_id=workspace_id,
        workflow_id=workflow_id,
        step_name=step_name,
        step_index=step_index,
        payload=payload,  # None is stored as JSON null, as the reference's `'null'::jsonb`
        completed_at=utcnow(),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=_KEY, set_={name: stmt.excluded[name] for name in _REFRESHED}
    ).returning(c.c.id)
    return str((await conn.execute(stmt)).scalar_one())


async def latest(conn: AsyncConnection, workspace_id: str) -> Row[Any] | None:
    stmt = (
        sa.select(c)
        .where(c.c.workspace_id == workspace_id)
        .order_by(c.c.completed_at.desc(), c.c.id.desc())
        .limit(1)
    )
    return (await conn.execute(stmt)).first()


async def list_workflow(conn: AsyncConnection, workspace_id: str, workflow_id: str) -> list[Row[Any]]:
    stmt = (
        sa.select(c)
        .where(c.c.workspace_id == workspace_id, c.c.workflow_id == workflow_id)
        .order_by(c.c.step_index.desc(), c.c.completed_at.desc(), c.c.id)
    )
    return list((await conn.execute(stmt)).all())


async def delete_workflow(conn: AsyncConnection, workspace_id: str, workflow_id: str) -> int:
    stmt = sa.delete(c).where(c.c.workspace_id == workspace_id, c.c.workflow_id == workflow_id)
    return int((await conn.execute(stmt)).rowcount or 0)
