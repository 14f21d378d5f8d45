"""Schedules API (spec 05 §6): cron-timed prompts a workspace receives through the A2A proxy.

Rows are always addressed by workspace *and* schedule id (#113). Differences from the reference, each
recorded in docs/decisions.md (Schedules): a second schedule with a name the workspace already uses is 409
instead of a 500 from the unique index; re-enabling a schedule recomputes its next fire time (the
reference kept the stale one, so it fired at once on the next tick); the health route's caller must
authenticate even when it names itself or claims a system prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, StrictBool, StrictStr
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.schedules import cron, store
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUIRED = "cron_expr and prompt are required"
NOT_FOUND = "schedule not found"
NAME_TAKEN = "a schedule with this name already exists in this workspace"


class CreateBody(BaseModel):
    name: StrictStr = ""
    cron_expr: StrictStr = ""
    prompt: StrictStr = ""
    timezone: StrictStr = ""
    enabled: StrictBool = True


class UpdateBody(BaseModel):
    name: StrictStr | None = None
    cron_expr: StrictStr | None = None
    prompt: StrictStr | None = None
    timezone: StrictStr | None = None
    enabled: StrictBool | None = None


def _checked_zone(tz: str) -> str:
    try:
        cron.zone(tz)
    except ValueError:
        raise ApiError(400, f"invalid timezone: {tz}") from None
    return tz or "UTC"


def _next_run(expr: str, tz: str) -> datetime:
    try:
        return cron.next_fire(expr, tz, utcnow())
    except (cron.CronError, ValueError):
        raise ApiError(400, "invalid request body") from None


def item(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "workspace_id": row.workspace_id,
        "name": row.name,
        "cron_expr": row.cron_expr,
        "timezone": row.timezone,
        "prompt": row.prompt,
        "enabled": row.enabled,
        **_run_state(row),
        "source": row.source,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


def health_item(row: Any) -> dict[str, Any]:
    """What a peer may see of a schedule: its state, not its prompt or timing rule."""
    return {"id": row.id, "name": row.name, "enabled": row.enabled, **_run_state(row)}


def _run_state(row: Any) -> dict[str, Any]:
    """How a schedule's runs have gone, as both views render it (spliced in place: the wire's key order)."""
    return {
        "last_run_at": rfc3339(row.last_run_at),
        "next_run_at": rfc3339(row.next_run_at),
        "run_count": row.run_count,
        "last_status": row.last_status,
        "last_error": row.last_error,
    }


async def _db(
    ctx: AppContext,
    work: Callable[[AsyncConnection], Awaitable[T]],
    error: str,
    *,
    write: bool = False,
) -> T:
    """Run `work` in a connection (a transaction when writing); a DB failure is a logged 500 `error`.

    A unique-name race lost to a concurrent writer (the name check passed for both) is the 409 too.
    """
    try:
        if write:
            async with ctx.engine.begin() as conn:
                return await work(conn)
        async with ctx.engine.connect() as conn:
            return await work(conn)
    except ApiError:
        raise
    except sa.exc.IntegrityError:
        if write:
            raise ApiError(409, NAME_TAKEN) from None
        raise ApiError(500, error) from None
    except Exception:
        log.exception("schedules: %s", error)
        raise ApiError(500, error) from None


async def list_schedules(ctx: AppContext, ws_id: str) -> list[dict[str, Any]]:
    rows = await _db(ctx, lambda c: store.list_for_workspace(c, ws_id), "failed to list schedules")
    return [item(r) for r in rows]


async def create(ctx: AppContext, ws_id: str, body: CreateBody) -> dict[str, Any]:
    if not body.cron_expr or not body.prompt:
        raise ApiError(400, REQUIRED)
    tz = _checked_zone(body.timezone)
    next_run_at = _next_run(body.cron_expr, tz)
    values = {
        "name": body.name,
        "cron_expr": body.cron_expr,
        "timezone": tz,
        "prompt": body.prompt.replace("\r", ""),  # CRLF prompts made agents answer nothing (#958)
        "enabled": body.enabled,
        "next_run_at": next_run_at,
    }

    async def work(conn: AsyncConnection) -> str:
        if not await workspace_exists(conn, ws_id, include_removed=False):
            raise ApiError(404, "workspace not found")
        if await store.name_taken(conn, ws_id, body.name):
            raise ApiError(409, NAME_TAKEN)
        return await store.insert(conn, ws_id, values)

    schedule_id = await _db(ctx, work, "failed to create schedule", write=True)
    return {"id": schedule_id, "status": "created", "next_run_at": rfc3339(next_run_at)}


async def update(ctx: AppContext, ws_id: str, raw_id: str, body: UpdateBody) -> None:
    if body.cron_expr == "" or body.prompt == "":
        raise ApiError(400, REQUIRED)
    schedule_id = _schedule_id(raw_id)

    async def work(conn: AsyncConnection) -> None:
        row = await store.get(conn, ws_id, schedule_id)
        if row is None:
            raise ApiError(404, NOT_FOUND)
        changes = _changes(row, body)
        if body.name is not None and await store.name_taken(conn, ws_id, body.name, other_than=row.id):
            raise ApiError(409, NAME_TAKEN)
        await store.update(conn, ws_id, schedule_id, changes)

    await _db(ctx, work, "failed to update schedule", write=True)


def _changes(row: Any, body: UpdateBody) -> dict[str, Any]:
    """Columns to write. A new rule, zone or a re-enable recomputes the next fire time from now."""
    changes: dict[str, Any] = {}
    for key in ("name", "cron_expr", "enabled"):
        if getattr(body, key) is not None:
            changes[key] = getattr(body, key)
    if body.prompt is not None:
        changes["prompt"] = body.prompt.replace("\r", "")
    if body.timezone is not None:
        changes["timezone"] = _checked_zone(body.timezone)
    rule_changed = body.cron_expr is not None or body.timezone is not None
    re_enabled = body.enabled is True and not row.enabled
    if rule_changed or re_enabled:
        expr = changes.get("cron_expr", row.cron_expr)
        changes["next_run_at"] = _next_run(expr, changes.get("timezone", row.timezone))
    return changes


def _schedule_id(raw: str) -> str:
    schedule_id = parse_uuid(raw)
    if schedule_id is None:
        raise ApiError(404, NOT_FOUND)
    return schedule_id


async def delete(ctx: AppContext, ws_id: str, raw_id: str) -> None:
    schedule_id = _schedule_id(raw_id)
    found = await _db(
        ctx, lambda c: store.delete(c, ws_id, schedule_id), "failed to delete schedule", write=True
    )
    if not found:
        raise ApiError(404, NOT_FOUND)


async def run_now(ctx: AppContext, ws_id: str, raw_id: str) -> dict[str, Any]:
    """The prompt for the client to send through `/a2a` itself; nothing fires, no counters move."""
    schedule_id = _schedule_id(raw_id)
    row = await _db(ctx, lambda c: store.get(c, ws_id, schedule_id), "failed to load schedule")
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return {"status": "fired", "workspace_id": ws_id, "prompt": row.prompt}


async def history(ctx: AppContext, ws_id: str, raw_id: str) -> list[dict[str, Any]]:
    schedule_id = _schedule_id(raw_id)

    async def work(conn: AsyncConnection) -> list[Any]:
        if await store.get(conn, ws_id, schedule_id) is None:
            raise ApiError(404, NOT_FOUND)
        return await store.history(conn, ws_id, schedule_id)

    rows = await _db(ctx, work, "failed to load history")
    return [
        {
            "timestamp": rfc3339(r.created_at),
            "duration_ms": r.duration_ms,
            "status": r.status,
            "error_detail": r.error_detail or "",
            "request": r.request_body,
        }
        for r in rows
    ]


async def health(ctx: AppContext, ws_id: str) -> list[dict[str, Any]]:
    rows = await _db(ctx, lambda c: store.list_for_workspace(c, ws_id), "failed to list schedules")
    return [health_item(r) for r in rows]


async def admin_health(ctx: AppContext) -> list[dict[str, Any]]:
    rows = await _db(ctx, store.all_with_workspace, "failed to list schedules")
    now = utcnow()
    return [_admin_item(r, now) for r in rows]


def _admin_item(row: Any, now: datetime) -> dict[str, Any]:
    """Stale = not run for twice the gap between its next two slots; a rule we cannot read is never stale."""
    try:
        threshold = int(2 * cron.gap_seconds(row.cron_expr, row.timezone, now))
    except (cron.CronError, ValueError):
        threshold = 0
    if row.last_run_at is None:
        status = "never_run"
    elif threshold > 0 and (now - row.last_run_at).total_seconds() > threshold:
        status = "stale"
    else:
        status = "ok"
    return {
        "workspace_id": row.workspace_id,
        "workspace_name": row.workspace_name,
        "schedule_id": row.id,
        "schedule_name": row.name,
        "cron_expr": row.cron_expr,
        "last_run_at": rfc3339(row.last_run_at),
        "expected_next_run": rfc3339(row.next_run_at),
        "status": status,
        "stale_threshold_seconds": threshold,
    }
