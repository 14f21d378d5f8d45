"""SQL for `agents`. Callers run each operation in one transaction; the partial unique index
`uq_agents_one_active` settles two writers racing to give a workspace an active agent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import agents, workspaces

a, w = agents, workspaces


async def active(conn: AsyncConnection, ws_id: str) -> Any | None:
    """The workspace's active agent, row-locked on Postgres so a concurrent change waits for ours."""
    q = sa.select(a.c.id, a.c.model).where(a.c.workspace_id == ws_id, a.c.status == "active")
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def insert(conn: AsyncConnection, ws_id: str, model: str) -> str:
    agent_id = new_id()
    await conn.execute(sa.insert(a).values(id=agent_id, workspace_id=ws_id, model=model, created_at=utcnow()))
    return agent_id


async def retire(conn: AsyncConnection, agent_id: str, status: str, reason: str, at: datetime) -> None:
    q = sa.update(a).where(a.c.id == agent_id, a.c.status == "active")
    await conn.execute(q.values(status=status, removal_reason=reason, removed_at=at))


async def move(conn: AsyncConnection, agent_id: str, target: str) -> None:
    await conn.execute(sa.update(a).where(a.c.id == agent_id).values(workspace_id=target))
