"""Every workspace status change goes through `transition` (DESIGN §2).

A compare-and-set UPDATE (`WHERE id=… AND status IN expect`) makes races explicit: a late heartbeat
cannot resurrect a removed row, and two sweepers cannot both flip the same row. The caller learns
whether it won, and the event is emitted only by the winner unless `emit_always` asks otherwise
(the reference emits some registry events even when the guarded UPDATE touched nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspaces
from workspace_server.events.service import EventService

LIVE_STATUSES = ("online", "degraded")


class Lifecycle:
    def __init__(self, engine: AsyncEngine, events: EventService) -> None:
        self.engine = engine
        self.events = events

    async def transition(
        self,
        ws_id: str,
        *,
        to: str,
        expect: Iterable[str] | None = None,
        not_in: Iterable[str] | None = None,
        values: dict[str, Any] | None = None,
        event: str | None = None,
        payload: dict[str, Any] | None = None,
        emit_always: bool = False,
        conn: AsyncConnection | None = None,
    ) -> bool:
        """Set status `to` if the current status is in `expect` (or not in `not_in`); True if it changed."""
        stmt = sa.update(workspaces).where(workspaces.c.id == ws_id)
        if expect is not None:
            stmt = stmt.where(workspaces.c.status.in_(list(expect)))
        if not_in is not None:
            stmt = stmt.where(workspaces.c.status.not_in(list(not_in)))
        stmt = stmt.values(status=to, updated_at=utcnow(), **(values or {}))
        if conn is not None:
            changed = (await conn.execute(stmt)).rowcount > 0
        else:
            async with self.engine.begin() as c:
                changed = (await c.execute(stmt)).rowcount > 0
        if event and (changed or emit_always):
            await self.events.record(event, ws_id, payload or {})
        return changed
