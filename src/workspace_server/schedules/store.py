"""SQL for `workspace_schedules` and the `cron_run` activity rows of their history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import activity_logs, workspace_schedules, workspaces
from workspace_server.workspaces.status import Status

s, w, a = workspace_schedules, workspaces, activity_logs
HISTORY_LIMIT = 20


async def list_for_workspace(conn: AsyncConnection, ws_id: str) -> list[Row[Any]]:
    q = sa.select(s).where(s.c.workspace_id == ws_id).order_by(s.c.created_at, s.c.id)
    return list((await conn.execute(q)).all())


async def get(conn: AsyncConnection, ws_id: str, schedule_id: str) -> Row[Any] | None:
    """The schedule when it belongs to `ws_id` (never by id alone: spec 05 §12, #113)."""
    q = sa.select(s).where(s.c.id == schedule_id, s.c.workspace_id == ws_id)
    return (await conn.execute(q)).first()


async def name_taken(conn: AsyncConnection, ws_id: str, name: str, *, other_than: str = "") -> bool:
    q = sa.select(s.c.id).where(s.c.workspace_id == ws_id, s.c.name == name, s.c.id != other_than)
    return (await conn.execute(q)).first() is not None


async def insert(conn: AsyncConnection, ws_id: str, values: dict[str, Any]) -> str:
    schedule_id, now = new_id(), utcnow()
    await conn.execute(
        sa.insert(s).values(
            id=schedule_id, workspace_id=ws_id, source="runtime", created_at=now, updated_at=now, **values
        )
    )
    return schedule_id


async def update(conn: AsyncConnection, ws_id: str, schedule_id: str, values: dict[str, Any]) -> bool:
    q = sa.update(s).where(s.c.id == schedule_id, s.c.workspace_id == ws_id)
    return bool((await conn.execute(q.values(**values, updated_at=utcnow()))).rowcount)


async def delete(conn: AsyncConnection, ws_id: str, schedule_id: str) -> bool:
    q = sa.delete(s).where(s.c.id == schedule_id, s.c.workspace_id == ws_id)
    return bool((await conn.execute(q)).rowcount)


async def history(conn: AsyncConnection, ws_id: str, schedule_id: str) -> list[Any]:
    """The schedule's newest `cron_run` activity rows."""
    q = (
        sa.select(a.c.created_at, a.c.duration_ms, a.c.status, a.c.error_detail, a.c.request_body)
        .where(
            a.c.workspace_id == ws_id,
            a.c.activity_type == "cron_run",
            a.c.request_body["schedule_id"].as_string() == schedule_id,
        )
        .order_by(a.c.created_at.desc(), a.c.id.desc())
        .limit(HISTORY_LIMIT)
    )
    return list((await conn.execute(q)).all())


async def all_with_workspace(conn: AsyncConnection) -> list[Row[Any]]:
    """Every schedule of a live workspace, by workspace name then schedule name (admin health)."""
    q = (
        sa.select(s, w.c.name.label("workspace_name"))
        .join(w, w.c.id == s.c.workspace_id)
        .where(w.c.status != Status.REMOVED)
        .order_by(w.c.name, s.c.name, s.c.id)
    )
    return list((await conn.execute(q)).all())


# ---- the scheduler's side ----


async def missing_next_run(conn: AsyncConnection) -> list[Any]:
    """Enabled rows without a next fire time (boot repair, #722): they would never be due."""
    q = sa.select(s.c.id, s.c.cron_expr, s.c.timezone).where(s.c.enabled.is_(True), s.c.next_run_at.is_(None))
    return list((await conn.execute(q)).all())


async def set_next_run(conn: AsyncConnection, schedule_id: str, next_run_at: datetime) -> None:
    await conn.execute(sa.update(s).where(s.c.id == schedule_id).values(next_run_at=next_run_at))


async def due(conn: AsyncConnection, now: datetime, limit: int) -> list[Row[Any]]:
    """Enabled schedules whose fire time has come, of workspaces that are not removed, soonest first."""
    q = (
        sa.select(s)
        .join(w, w.c.id == s.c.workspace_id)
        .where(s.c.enabled.is_(True), s.c.next_run_at <= now, w.c.status != Status.REMOVED)
        .order_by(s.c.next_run_at, s.c.id)
        .limit(limit)
    )
    return list((await conn.execute(q)).all())


async def claim(
    conn: AsyncConnection, schedule_id: str, seen: datetime, next_run_at: datetime | None
) -> bool:
    """Advance a due schedule past its slot; False when another process (or tick) already did.

    Advancing before firing means a crash mid-fire loses that one run instead of firing it again on every
    tick, and two replicas never fire the same slot (spec 05 §12, #1029: missed slots are never replayed).
    """
    q = sa.update(s).where(s.c.id == schedule_id, s.c.next_run_at == seen).values(next_run_at=next_run_at)
    return bool((await conn.execute(q)).rowcount)


async def record_run(
    conn: AsyncConnection, schedule_id: str, *, at: datetime, status: str, error: str, empty_runs: int | None
) -> None:
    """A finished (or skipped) run: counters and outcome. `empty_runs` None leaves the streak unchanged."""
    values: dict[str, Any] = {
        "last_run_at": at,
        "run_count": s.c.run_count + 1,
        "last_status": status,
        "last_error": error,
        "updated_at": utcnow(),
    }
    if empty_runs is not None:
        values["consecutive_empty_runs"] = empty_runs
    await conn.execute(sa.update(s).where(s.c.id == schedule_id).values(**values))


async def busy_state(conn: AsyncConnection, ws_id: str) -> Any:
    q = sa.select(w.c.active_tasks, w.c.max_concurrent_tasks).where(w.c.id == ws_id)
    return (await conn.execute(q)).first()


async def reset_phantom_busy(conn: AsyncConnection, quiet_since: datetime) -> list[str]:
    """Zero the task count of workspaces that claim work but logged no activity since `quiet_since`.

    A runtime that crashed mid-task leaves active_tasks > 0 behind, and every cron of that workspace would
    be skipped as busy forever (spec 05 §6, #969).
    """
    recent = sa.select(a.c.id).where(a.c.workspace_id == w.c.id, a.c.created_at >= quiet_since).exists()
    q = (
        sa.update(w)
        .where(w.c.status != Status.REMOVED, w.c.active_tasks > 0, ~recent)
        .values(active_tasks=0, current_task="")
        .returning(w.c.id)
    )
    return [r.id for r in (await conn.execute(q)).all()]
