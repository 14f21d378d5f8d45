"""SQL the MCP tools need beyond other areas' stores: delegation status rows in `activity_logs`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.db.schema import activity_logs

a = activity_logs


async def latest_task_row(conn: AsyncConnection, caller: str, target: str, task_id: str) -> Any:
    """The caller's newest row for that target whose request names the task (the reference's query)."""
    stmt = (
        sa.select(a.c.status, a.c.error_detail, a.c.response_body)
        .where(
            a.c.workspace_id == caller,
            a.c.target_id == target,
            a.c.request_body["delegation_id"].as_string() == task_id,
        )
        .order_by(a.c.created_at.desc(), a.c.id.desc())
        .limit(1)
    )
    return (await conn.execute(stmt)).first()


async def completed_result_body(conn: AsyncConnection, caller: str, task_id: str) -> Any:
    """The reply recorded for a completed delegation (`delegate_result` row), or None."""
    stmt = (
        sa.select(a.c.response_body)
        .where(
            a.c.workspace_id == caller,
            a.c.method == "delegate_result",
            a.c.status == "completed",
            a.c.response_body["delegation_id"].as_string() == task_id,
        )
        .order_by(a.c.created_at.desc(), a.c.id.desc())
        .limit(1)
    )
    return (await conn.execute(stmt)).scalar()
