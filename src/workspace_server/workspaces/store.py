"""SQL for the `workspaces` table and its satellites. Status changes go through lifecycle.py instead."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspaces


async def insert_workspace(
    conn: AsyncConnection,
    *,
    id: str,
    name: str,
    role: str | None = None,
    tier: int = 3,
    runtime: str = "langgraph",
    status: str = "provisioning",
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
