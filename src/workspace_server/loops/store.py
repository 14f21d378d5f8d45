"""The sweepers' queries: candidate selection, and a status change re-checked against its guard.

Status changes still go through `Lifecycle.transition`; this module only adds the condition the sweeper
selected on (heartbeat or provisioning age), re-checked under a row lock in the same transaction, so a
heartbeat or restart landing between SELECT and UPDATE is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from workspace_server.context import AppContext
from workspace_server.db.schema import workspaces
from workspace_server.workspaces.status import LIVE_STATUSES, Status

EXTERNAL = "external"

w = workspaces.c


@dataclass(frozen=True)
class Candidate:
    id: str
    runtime: str
    updated_at: datetime | None = None


def last_seen() -> sa.ColumnElement[datetime]:
    """An agent's last sign of life: its last heartbeat, else the row's last write (register sets both)."""
    return sa.func.coalesce(w.last_heartbeat_at, w.updated_at)


def heartbeat_stale(cutoff: datetime, *, external: bool) -> sa.ColumnElement[bool]:
    runtime = w.runtime == EXTERNAL if external else w.runtime != EXTERNAL
    return sa.and_(w.status.in_(LIVE_STATUSES), runtime, last_seen() < cutoff)


async def stale_live_workspaces(ctx: AppContext, cond: sa.ColumnElement[bool]) -> list[Candidate]:
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(sa.select(w.id, w.runtime).where(cond))).all()
    return [Candidate(r.id, r.runtime) for r in rows]


async def provisioning_workspaces(ctx: AppContext) -> list[Candidate]:
    """All rows in provisioning (few at any time); each runtime has its own timeout, applied by the caller."""
    stmt = sa.select(w.id, w.runtime, w.updated_at).where(w.status == Status.PROVISIONING)
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [Candidate(r.id, r.runtime or "", r.updated_at) for r in rows]


async def guarded_transition(
    ctx: AppContext,
    ws_id: str,
    guard: sa.ColumnElement[bool],
    *,
    to: str,
    expect: tuple[str, ...],
    event: str,
    payload: dict[str, Any],
    values: dict[str, Any] | None = None,
) -> bool:
    """`transition` only while `guard` still holds for the row; the event is recorded after commit."""
    return await ctx.lifecycle.transition(
        ws_id, to=to, expect=expect, values=values, event=event, payload=payload, guard=guard
    )
