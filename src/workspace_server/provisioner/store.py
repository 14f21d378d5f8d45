"""The orchestrator's SQL: hierarchy walks, guarded url writes, the hibernate claim's guard.

Status changes still go through `Lifecycle.transition`; what lives here only reads rows or writes
non-status columns under a status guard, so a late write never lands on a removed or paused row.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspace_auth_tokens, workspaces
from workspace_server.registry.store import PROVISIONER_URL_PREFIX
from workspace_server.workspaces.status import Status

w = workspaces.c

# A started agent's url may be stored while the row is in one of these (online: it registered first).
URL_WRITABLE = (Status.PROVISIONING, Status.ONLINE, Status.DEGRADED)


async def paused_ancestor(conn: AsyncConnection, ws_id: str) -> str | None:
    """Name of the nearest paused ancestor, or None. Cycle-safe (PATCH allows parent cycles)."""
    seen = {ws_id}
    parent = (await conn.execute(sa.select(w.parent_id).where(w.id == ws_id))).scalar_one_or_none()
    while parent and parent not in seen:
        seen.add(parent)
        row = (await conn.execute(sa.select(w.parent_id, w.status, w.name).where(w.id == parent))).first()
        if row is None:
            return None
        if row.status == Status.PAUSED:
            return str(row.name)
        parent = row.parent_id
    return None


async def descendants_where(
    conn: AsyncConnection, ws_id: str, statuses: Iterable[str], *, include: bool
) -> list[tuple[str, str]]:
    """(id, name) of descendants reached only through rows whose status is (not) in `statuses`.

    include=True walks rows IN statuses (resume: through paused rows); include=False walks rows NOT IN
    statuses (pause: through rows that are neither removed nor paused). Breadth-first, cycle-safe.
    """
    wanted = list(statuses)
    cond = w.status.in_(wanted) if include else w.status.not_in(wanted)
    seen = {ws_id}
    out: list[tuple[str, str]] = []
    frontier = [ws_id]
    while frontier:
        q = sa.select(w.id, w.name).where(w.parent_id.in_(frontier), cond).order_by(w.created_at, w.id)
        nxt = [(r.id, r.name) for r in (await conn.execute(q)).all() if r.id not in seen]
        seen.update(i for i, _ in nxt)
        out.extend(nxt)
        frontier = [i for i, _ in nxt]
    return out


async def set_url_if_live(conn: AsyncConnection, ws_id: str, url: str) -> bool:
    """Store the started agent's url unless the row moved on (paused, removed, failed …) meanwhile."""
    stmt = (
        sa.update(workspaces)
        .where(w.id == ws_id, w.status.in_(URL_WRITABLE))
        .values(url=url, updated_at=utcnow())
    )
    return (await conn.execute(stmt)).rowcount > 0


async def set_runtime(conn: AsyncConnection, ws_id: str, runtime: str) -> None:
    await conn.execute(
        sa.update(workspaces).where(w.id == ws_id).values(runtime=runtime, updated_at=utcnow())
    )


def hibernation_guard(*, force: bool, idle_before: datetime | None = None) -> sa.ColumnElement[bool]:
    """What must still hold, on the locked row, for online/degraded → hibernating (`Lifecycle.transition`
    locks the row first, so the active-task check and the status change are one step: of two concurrent
    hibernates exactly one wins; a task arriving in between makes a non-forced claim fail). No active
    tasks unless `force`; `idle_before` (the idle sweep): no task reported since before then either."""
    guard: sa.ColumnElement[bool] = sa.true() if force else w.active_tasks == 0
    if idle_before is not None:
        guard = sa.and_(guard, w.idle_since <= idle_before)
    return guard


async def statuses_of(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, str]:
    """id → status for the ids that have a row (removed rows included)."""
    wanted = list(ids)
    if not wanted:
        return {}
    rows = (await conn.execute(sa.select(w.id, w.status).where(w.id.in_(wanted)))).all()
    return {r.id: r.status for r in rows}


async def hibernation_candidates(conn: AsyncConnection) -> list[Any]:
    """Rows opted in to idle hibernation that are live, idle and ours; their window is checked by the
    caller (it differs per row)."""
    q = sa.select(w.id, w.hibernation_idle_minutes, w.idle_since).where(
        w.hibernation_idle_minutes > 0,
        w.status.in_((Status.ONLINE, Status.DEGRADED)),
        w.active_tasks == 0,
        w.idle_since.is_not(None),
        w.runtime != "external",
    )
    return list((await conn.execute(q)).all())


async def backend_live_rows(conn: AsyncConnection) -> list[Any]:
    """online/degraded rows whose agent we run (not external): the health sweep's candidates."""
    q = sa.select(w.id, w.name, w.runtime).where(
        w.status.in_((Status.ONLINE, Status.DEGRADED)), w.runtime != "external"
    )
    return list((await conn.execute(q)).all())


async def rows_without_backend_url(conn: AsyncConnection) -> list[Any]:
    """Live or provisioning rows we run whose url is not one our backend assigned (empty, or what the
    agent registered): the start-up adoption's candidates (Orchestrator.adopt_instances)."""
    q = sa.select(w.id, w.url, w.tier).where(
        w.status.in_(URL_WRITABLE),
        w.runtime != "external",
        sa.or_(w.url.is_(None), sa.not_(w.url.startswith(PROVISIONER_URL_PREFIX, autoescape=True))),
    )
    return list((await conn.execute(q)).all())


async def adopt_url(conn: AsyncConnection, ws_id: str, url: str) -> bool:
    """Store the url of a running instance found at start-up, unless the row moved on or a start has
    recorded one meanwhile."""
    stmt = (
        sa.update(workspaces)
        .where(
            w.id == ws_id,
            w.status.in_(URL_WRITABLE),
            sa.or_(w.url.is_(None), sa.not_(w.url.startswith(PROVISIONER_URL_PREFIX, autoescape=True))),
        )
        .values(url=url, updated_at=utcnow())
    )
    return (await conn.execute(stmt)).rowcount > 0


async def revoke_tokens_except(conn: AsyncConnection, ws_id: str, keep_hash: bytes) -> None:
    """Revoke the workspace's live tokens but the one with `keep_hash` (the one its new start holds)."""
    t = workspace_auth_tokens.c
    await conn.execute(
        sa.update(workspace_auth_tokens)
        .where(t.workspace_id == ws_id, t.revoked_at.is_(None), t.token_hash != keep_hash)
        .values(revoked_at=utcnow())
    )
