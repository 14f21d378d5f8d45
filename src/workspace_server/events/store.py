"""Reads of the `structure_events` audit trail (writes go through EventService.record)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.time import rfc3339
from workspace_server.db.schema import structure_events

LIST_LIMIT = 100


async def recent_events(
    conn: AsyncConnection, workspace_id: str | None = None, limit: int = LIST_LIMIT
) -> list[dict[str, Any]]:
    """Newest first, as `GET /events[/:workspaceId]` renders them."""
    t = structure_events
    q = sa.select(t.c.id, t.c.event_type, t.c.workspace_id, t.c.payload, t.c.created_at)
    if workspace_id is not None:
        q = q.where(t.c.workspace_id == workspace_id)
    q = q.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
    return [
        {  # keys sorted, as Go marshals the reference's map
            "created_at": rfc3339(r.created_at),
            "event_type": r.event_type,
            "id": r.id,
            "payload": r.payload,
            "workspace_id": r.workspace_id,
        }
        for r in (await conn.execute(q)).all()
    ]
