"""SQL for `activity_logs`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import activity_logs

JSON_COLUMNS = ("request_body", "response_body", "tool_trace")


async def insert_activity(conn: AsyncConnection, **values: Any) -> str:
    """Insert one row; a None JSON value becomes SQL NULL (not JSON `null`). Returns the id."""
    row_id = new_id()
    for col in JSON_COLUMNS:
        if values.get(col) is None:
            values[col] = sa.null()
    values.setdefault("created_at", utcnow())
    await conn.execute(sa.insert(activity_logs).values(id=row_id, **values))
    return row_id


async def list_activity(
    conn: AsyncConnection,
    workspace_id: str,
    *,
    activity_type: str | None = None,
    source: str | None = None,
    limit: int = 100,
) -> list[Row[Any]]:
    """Newest first. `source`: "canvas" = no source_id, "agent" = any source_id."""
    t = activity_logs
    q = sa.select(t).where(t.c.workspace_id == workspace_id)
    if activity_type:
        q = q.where(t.c.activity_type == activity_type)
    if source == "canvas":
        q = q.where(t.c.source_id.is_(None))
    elif source == "agent":
        q = q.where(t.c.source_id.is_not(None))
    q = q.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
    return list((await conn.execute(q)).all())


async def delete_older_than(conn: AsyncConnection, cutoff: datetime) -> int:
    result = await conn.execute(sa.delete(activity_logs).where(activity_logs.c.created_at < cutoff))
    return int(result.rowcount or 0)
