"""The only writer of `workspaces.status` (DESIGN §2): every status change goes through `Lifecycle`.

A compare-and-set UPDATE (`WHERE id=… AND status IN expect`) makes races explicit: a late heartbeat
cannot resurrect a removed row, and two sweepers cannot both flip the same row. The caller learns
whether it won, and the event is emitted only by the winner unless `emit_always` asks otherwise
(the reference emits some registry events even when the guarded UPDATE touched nothing).

The moves written in several places are named here (`mark_failed`, `mark_offline`, `mark_removed`), each
with its compare-and-set and its event; rarer moves call `transition` directly. No other module issues
an UPDATE of the column (tests/unit/test_status_owner.py checks the source). Creating a row with its
initial status is not a change: the INSERTs stay in their stores (`workspaces/store.insert_workspace`,
`registry/store.upsert_registration`, whose conflict branch leaves the status alone).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspaces
from workspace_server.events.service import EventService
from workspace_server.workspaces.status import LIVE_STATUSES, Status

__all__ = ["LIVE_STATUSES", "PROVISION_FAILED", "Lifecycle", "Status"]

PROVISION_FAILED = "WORKSPACE_PROVISION_FAILED"
OFFLINE = "WORKSPACE_OFFLINE"


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
        guard: sa.ColumnElement[bool] | None = None,
    ) -> bool:
        """Set status `to` if the current status is in `expect` (or not in `not_in`); True if it changed.

        `guard`: the row is first locked `WHERE id=… AND guard` in the same transaction, and nothing
        changes unless it still holds (a sweep's "still stale" / "still timed out" condition). Without
        `conn` the event is recorded after commit (recording inside would wait on our own write lock
        under SQLite).
        """
        if conn is not None:
            changed = await self._set(conn, ws_id, to, expect, not_in, values, guard)
        else:
            async with self.engine.begin() as c:
                changed = await self._set(c, ws_id, to, expect, not_in, values, guard)
        if event and (changed or emit_always):
            await self.events.record(event, ws_id, payload or {})
        return changed

    @staticmethod
    async def _set(
        conn: AsyncConnection,
        ws_id: str,
        to: str,
        expect: Iterable[str] | None,
        not_in: Iterable[str] | None,
        values: dict[str, Any] | None,
        guard: sa.ColumnElement[bool] | None,
    ) -> bool:
        w = workspaces
        if guard is not None:
            locked = sa.select(w.c.id).where(w.c.id == ws_id, guard).with_for_update()
            if (await conn.execute(locked)).first() is None:
                return False
        stmt = sa.update(w).where(w.c.id == ws_id)
        if expect is not None:
            stmt = stmt.where(w.c.status.in_(list(expect)))
        if not_in is not None:
            stmt = stmt.where(w.c.status.not_in(list(not_in)))
        stmt = stmt.values(status=to, updated_at=utcnow(), **(values or {}))
        return (await conn.execute(stmt)).rowcount > 0

    # ---- named moves

    async def mark_failed(
        self,
        ws_id: str,
        reason: str,
        payload: dict[str, Any],
        *,
        guard: sa.ColumnElement[bool] | None = None,
    ) -> bool:
        """provisioning → failed, `reason` stored as `last_sample_error`, `WORKSPACE_PROVISION_FAILED`
        with the caller's `payload` (each caller's own keys: error, log_tail, source, timeout_secs …)."""
        return await self.transition(
            ws_id,
            to=Status.FAILED,
            expect=(Status.PROVISIONING,),
            values={"last_sample_error": reason},
            event=PROVISION_FAILED,
            payload=payload,
            guard=guard,
        )

    async def mark_offline(
        self,
        ws_id: str,
        *,
        expect: Iterable[str] | None = LIVE_STATUSES,
        not_in: Iterable[str] | None = None,
        guard: sa.ColumnElement[bool] | None = None,
    ) -> bool:
        """online/degraded (or whatever `expect` / `not_in` admit) → offline, `WORKSPACE_OFFLINE` `{}`."""
        return await self.transition(
            ws_id, to=Status.OFFLINE, expect=expect, not_in=not_in, event=OFFLINE, payload={}, guard=guard
        )

    async def mark_removed(self, ws_id: str, *, conn: AsyncConnection | None = None) -> bool:
        """Any status → removed; no event (the delete route records its own once the cascade is done)."""
        return await self.transition(ws_id, to=Status.REMOVED, not_in=(Status.REMOVED,), conn=conn)
