"""SQL for the registry: registration upsert, heartbeat columns, agent card, discovery and peer reads.

Status changes are not made here (they go through `workspaces/lifecycle.py`), with one exception: a
register for an id we have never seen inserts the row already `online` — there is no earlier status to
change from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.db.schema import workspaces
from workspace_server.workspaces.status import Status

PROVISIONER_URL_PREFIX = "http://127.0.0.1"
MAX_MONTHLY_SPEND = 1_000_000_000_000  # cents; #615 clamp


def _insert_for(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def upsert_registration(
    conn: AsyncConnection, ws_id: str, url: str, agent_card: Any, now: datetime
) -> str | None:
    """Insert an unknown id as an online row (name = id), or refresh a known, non-removed one.

    A known row keeps a provisioner host-port URL (`http://127.0.0.1…`), takes the new agent card and
    heartbeat time (and forgets its idle time), but not its status — the caller moves that through the
    lifecycle. Returns the url
    stored on the row, or None when the row is `removed` (left untouched: #73).
    """
    w = workspaces
    insert = _insert_for(conn)
    stmt = insert(w).values(
        id=ws_id,
        name=ws_id,
        url=url,
        agent_card=agent_card,
        status=Status.ONLINE,
        last_heartbeat_at=now,
        awareness_namespace=f"workspace:{ws_id}",
        created_at=now,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[w.c.id],
        set_={
            "url": sa.case(
                (w.c.url.startswith(PROVISIONER_URL_PREFIX, autoescape=True), w.c.url),
                else_=stmt.excluded.url,
            ),
            "agent_card": stmt.excluded.agent_card,
            "last_heartbeat_at": now,
            "updated_at": now,
            # a (re)started agent has not been idle yet: its first heartbeat starts the idle clock, so a
            # workspace woken from hibernation is not put back to sleep at once by the idle sweep
            "idle_since": None,
        },
        where=w.c.status != Status.REMOVED,
    ).returning(w.c.url)
    row = (await conn.execute(stmt)).first()
    return None if row is None else (row.url or "")


class HeartbeatSnapshot(NamedTuple):
    status: str
    current_task: str
    max_concurrent_tasks: int


async def heartbeat_snapshot(conn: AsyncConnection, ws_id: str) -> HeartbeatSnapshot | None:
    w = workspaces
    row = (
        await conn.execute(
            sa.select(w.c.status, w.c.current_task, w.c.max_concurrent_tasks).where(w.c.id == ws_id)
        )
    ).first()
    return None if row is None else _snapshot(row)


def _snapshot(row: Any) -> HeartbeatSnapshot:
    return HeartbeatSnapshot(
        status=row.status,
        current_task=row.current_task or "",
        max_concurrent_tasks=row.max_concurrent_tasks or 1,
    )


def clamp_spend(cents: int) -> int:
    return min(max(cents, 0), MAX_MONTHLY_SPEND)


def _heartbeat_values(*, busy: bool, spend: bool) -> dict[str, Any]:
    w, now = workspaces, sa.bindparam("p_now", type_=workspaces.c.updated_at.type)
    values: dict[str, Any] = {
        "last_heartbeat_at": now,
        "last_error_rate": sa.bindparam("p_error_rate"),
        "last_sample_error": sa.bindparam("p_sample_error"),
        "active_tasks": sa.bindparam("p_active_tasks"),
        "uptime_seconds": sa.bindparam("p_uptime_seconds"),
        "current_task": sa.bindparam("p_current_task"),
        "updated_at": now,
        "idle_since": None if busy else sa.func.coalesce(w.c.idle_since, now),
    }
    if spend:
        values["monthly_spend"] = sa.bindparam("p_monthly_spend")
    return values


def _pg_heartbeat(*, busy: bool, spend: bool) -> sa.Update:
    w = workspaces
    old = (
        sa.select(w.c.id, w.c.status, w.c.current_task, w.c.max_concurrent_tasks)
        .where(w.c.id == sa.bindparam("p_id"))
        .with_for_update()
        .subquery("old")
    )
    return (
        sa.update(w)
        .where(w.c.id == old.c.id, w.c.status != Status.REMOVED)
        .values(**_heartbeat_values(busy=busy, spend=spend))
        .returning(old.c.status, old.c.current_task, old.c.max_concurrent_tasks)
    )


def _plain_heartbeat(*, busy: bool, spend: bool) -> sa.Update:
    w = workspaces
    return (
        sa.update(w)
        .where(w.c.id == sa.bindparam("p_id"), w.c.status != Status.REMOVED)
        .values(**_heartbeat_values(busy=busy, spend=spend))
    )


# The hottest write: built once per (busy, spend) variant and reused, so each request only binds values
# (constructing the statement cost more CPU than executing it).
_VARIANTS = [(busy, spend) for busy in (False, True) for spend in (False, True)]
_PG_HEARTBEAT = {v: _pg_heartbeat(busy=v[0], spend=v[1]) for v in _VARIANTS}
_PLAIN_HEARTBEAT = {v: _plain_heartbeat(busy=v[0], spend=v[1]) for v in _VARIANTS}


async def apply_heartbeat(
    conn: AsyncConnection,
    ws_id: str,
    *,
    now: datetime,
    error_rate: float,
    sample_error: str,
    active_tasks: int,
    uptime_seconds: int,
    current_task: str,
    monthly_spend: int,
) -> HeartbeatSnapshot | None:
    """Write the heartbeat columns unless the row is removed; the row as it was before, or None.

    `monthly_spend` 0 means "no report" and leaves the column alone. `idle_since` marks when the
    workspace last became idle (spec 01 §4.4 DECIDE): set on the first idle heartbeat, cleared by work.
    On Postgres this is one statement (UPDATE … FROM the locked old row … RETURNING the old values): the
    heartbeat is the server's hottest write. SQLite cannot return FROM-columns, so it reads then writes.
    """
    variant = (active_tasks > 0, monthly_spend > 0)
    params: dict[str, Any] = {
        "p_id": ws_id,
        "p_now": now,
        "p_error_rate": error_rate,
        "p_sample_error": sample_error,
        "p_active_tasks": active_tasks,
        "p_uptime_seconds": uptime_seconds,
        "p_current_task": current_task,
    }
    if variant[1]:
        params["p_monthly_spend"] = monthly_spend
    if conn.dialect.name == "postgresql":
        row = (await conn.execute(_PG_HEARTBEAT[variant], params)).first()
        return None if row is None else _snapshot(row)
    snap = await heartbeat_snapshot(conn, ws_id)
    if snap is None or snap.status == Status.REMOVED:
        return None
    return snap if (await conn.execute(_PLAIN_HEARTBEAT[variant], params)).rowcount > 0 else None


async def update_agent_card(conn: AsyncConnection, ws_id: str, agent_card: Any, now: datetime) -> bool:
    w = workspaces
    stmt = (
        sa.update(w)
        .where(w.c.id == ws_id, w.c.status != Status.REMOVED)
        .values(agent_card=agent_card, updated_at=now)
    )
    return (await conn.execute(stmt)).rowcount > 0


async def discovery_rows(conn: AsyncConnection, ids: list[str]) -> dict[str, Any]:
    w = workspaces
    rows = await conn.execute(
        sa.select(w.c.id, w.c.name, w.c.runtime, w.c.url, w.c.status).where(w.c.id.in_(ids))
    )
    return {r.id: r for r in rows}


async def parent_of(conn: AsyncConnection, ws_id: str) -> tuple[bool, str | None]:
    """(exists, parent_id)."""
    w = workspaces
    row = (await conn.execute(sa.select(w.c.parent_id).where(w.c.id == ws_id))).first()
    return (False, None) if row is None else (True, row.parent_id)


_PEER_COLUMNS = (
    workspaces.c.id,
    workspaces.c.name,
    workspaces.c.role,
    workspaces.c.tier,
    workspaces.c.status,
    workspaces.c.agent_card,
    workspaces.c.url,
    workspaces.c.parent_id,
    workspaces.c.active_tasks,
)


async def peer_rows(conn: AsyncConnection, ws_id: str, parent_id: str | None) -> list[Any]:
    """Siblings (or other roots), then children, then the parent; never removed rows."""
    w = workspaces
    live = w.c.status != Status.REMOVED
    order = (w.c.name, w.c.id)
    if parent_id is not None:
        siblings = w.c.parent_id == parent_id
    else:
        siblings = w.c.parent_id.is_(None)
    groups = [sa.and_(siblings, w.c.id != ws_id), w.c.parent_id == ws_id]
    if parent_id is not None:
        groups.append(w.c.id == parent_id)
    out: list[Any] = []
    for cond in groups:
        out.extend((await conn.execute(sa.select(*_PEER_COLUMNS).where(cond, live).order_by(*order))).all())
    return out
