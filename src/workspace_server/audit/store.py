"""SQL for `audit_events` (read only: the agents' ledger is the writer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.db.schema import audit_events

a = audit_events


@dataclass(frozen=True)
class Filters:
    workspace_id: str
    agent_id: str = ""
    session_id: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def _where(f: Filters) -> list[sa.ColumnElement[bool]]:
    where = [a.c.workspace_id == f.workspace_id]
    if f.agent_id:
        where.append(a.c.agent_id == f.agent_id)
    if f.session_id:
        where.append(a.c.session_id == f.session_id)
    if f.since is not None:
        where.append(a.c.timestamp >= f.since)
    if f.until is not None:
        where.append(a.c.timestamp < f.until)
    return where


async def count(conn: AsyncConnection, f: Filters) -> int:
    stmt = sa.select(sa.func.count()).select_from(a).where(*_where(f))
    return int((await conn.execute(stmt)).scalar_one())


async def page(conn: AsyncConnection, f: Filters, *, limit: int, offset: int) -> list[Row[Any]]:
    """Rows in ledger order (timestamp, then id), all thirteen columns."""
    stmt = sa.select(a).where(*_where(f)).order_by(a.c.timestamp, a.c.id).limit(limit).offset(offset)
    return list((await conn.execute(stmt)).all())
