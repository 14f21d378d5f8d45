"""Activity log rules (spec 04 §4): self-reports, listing, agent→user notifications, retention."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workspace_server.activity import store
from workspace_server.activity.schemas import INVALID_TYPE, REPORTABLE_TYPES, ActivityReport, NotifyBody
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.events.service import EventService
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

ACTIVITY_LOGGED = "ACTIVITY_LOGGED"
AGENT_MESSAGE = "AGENT_MESSAGE"

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
SOURCES = ("canvas", "agent")
NOTIFY_SUMMARY_BYTES = 80
_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


async def log_activity(
    db: AsyncEngine | AsyncConnection,
    events: EventService | None,
    *,
    workspace_id: str,
    activity_type: str,
    source_id: str | None = None,
    target_id: str | None = None,
    method: str | None = None,
    summary: str | None = None,
    request_body: Any = None,
    response_body: Any = None,
    tool_trace: Any = None,
    duration_ms: int | None = None,
    status: str = "ok",
    error_detail: str | None = None,
) -> str | None:
    """Insert a row, then (with `events`) broadcast ACTIVITY_LOGGED. Best effort: never raises.

    Returns the row id, or None when the insert failed (then nothing is broadcast). Given a connection,
    the insert runs in a SAVEPOINT so a failure does not abort the caller's transaction.
    """
    values: dict[str, Any] = {
        "workspace_id": workspace_id,
        "activity_type": activity_type,
        "source_id": source_id,
        "target_id": target_id,
        "method": method,
        "summary": summary,
        "request_body": request_body,
        "response_body": response_body,
        "tool_trace": tool_trace,
        "duration_ms": duration_ms,
        "status": status,
        "error_detail": error_detail,
    }
    try:
        if isinstance(db, AsyncConnection):
            async with db.begin_nested():
                row_id = await store.insert_activity(db, **values)
        else:
            async with db.begin() as conn:
                row_id = await store.insert_activity(conn, **values)
    except Exception:
        log.exception("activity insert failed for workspace %s (%s)", workspace_id, activity_type)
        return None
    if events is not None:
        await events.broadcast(ACTIVITY_LOGGED, workspace_id, _logged_payload(values))
    return row_id


def _logged_payload(values: dict[str, Any]) -> dict[str, Any]:
    keys = ("activity_type", "method", "summary", "status", "source_id", "target_id", "duration_ms")
    payload = {k: values[k] for k in keys}
    if values["tool_trace"] is not None:
        payload["tool_trace"] = values["tool_trace"]
    return sorted_keys(payload)


async def report_activity(
    engine: AsyncEngine, events: EventService, workspace_id: str, body: ActivityReport
) -> None:
    """`POST /workspaces/:id/activity`: an agent reports on itself, never on behalf of another."""
    if not body.activity_type:
        raise ApiError(400, "invalid request body")
    if body.activity_type not in REPORTABLE_TYPES:
        raise ApiError(400, INVALID_TYPE)
    if body.source_id not in ("", workspace_id) and parse_uuid(body.source_id) != workspace_id:
        # %r: the value is attacker-controlled; keep its newlines out of our log lines
        log.warning("source_id spoof attempt: workspace=%s body_source_id=%r", workspace_id, body.source_id)
        raise ApiError(403, "source_id must match authenticated workspace")
    await log_activity(
        engine,
        events,
        workspace_id=workspace_id,
        activity_type=body.activity_type,
        source_id=workspace_id,
        target_id=body.target_id or None,
        method=body.method or None,
        summary=body.summary or None,
        request_body=body.request_body if body.request_body is not None else body.metadata,
        response_body=body.response_body,
        duration_ms=body.duration_ms,
        status=body.status or "ok",
        error_detail=body.error_detail or None,
    )


def parse_limit(raw: str | None) -> int:
    """Default 100, capped at 500; anything that is not a positive integer is the default."""
    if raw is None or not _INT.fullmatch(raw):
        return DEFAULT_LIMIT
    n = int(raw)
    return min(n, MAX_LIMIT) if n > 0 else DEFAULT_LIMIT


async def list_activity(
    engine: AsyncEngine, workspace_id: str, activity_type: str | None, source: str | None, limit: int
) -> list[dict[str, Any]]:
    if source and source not in SOURCES:
        raise ApiError(400, "source must be 'canvas' or 'agent'")
    try:
        async with engine.connect() as conn:
            rows = await store.list_activity(
                conn, workspace_id, activity_type=activity_type or None, source=source or None, limit=limit
            )
    except Exception:
        log.exception("activity list failed for %s", workspace_id)
        raise ApiError(500, "query failed") from None
    return [activity_item(r) for r in rows]


def activity_item(row: Row[Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": row.id,
        "workspace_id": row.workspace_id,
        "activity_type": row.activity_type,
        "source_id": row.source_id,
        "target_id": row.target_id,
        "method": row.method,
        "summary": row.summary,
        "duration_ms": row.duration_ms,
        "status": row.status,
        "error_detail": row.error_detail,
        "created_at": rfc3339(row.created_at),
    }
    for col in store.JSON_COLUMNS:  # present only when non-null, as the reference
        value = getattr(row, col)
        if value is not None:
            item[col] = value
    return sorted_keys(item)


def sorted_keys(d: dict[str, Any]) -> dict[str, Any]:
    """Go marshals a map (gin.H) with its keys sorted; our map-shaped bodies and payloads do the same."""
    return dict(sorted(d.items()))


def truncate_bytes(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, never splitting a character, `...` appended when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore") + "..."


async def notify(engine: AsyncEngine, events: EventService, workspace_id: str, body: NotifyBody) -> None:
    """`POST /workspaces/:id/notify`: push a message to the canvas chat, and keep it for reloads."""
    if not body.message:
        raise ApiError(400, "message is required")
    attachments = body.attachments or []
    for i, att in enumerate(attachments):
        if not att.uri or not att.name:
            raise ApiError(400, f"attachment[{i}]: uri and name are required")
    name = await _live_workspace_name(engine, workspace_id)
    files = [a.wire() for a in attachments]
    payload: dict[str, Any] = {"message": body.message, "workspace_id": workspace_id, "name": name}
    if files:
        payload["attachments"] = files
    await events.broadcast(AGENT_MESSAGE, workspace_id, sorted_keys(payload))
    # The chat history loader reads `type=a2a_receive&source=canvas` and rebuilds bubbles and file
    # chips from response_body, so the row has no source and carries the parts.
    response: dict[str, Any] = {"result": body.message}
    if files:
        response["parts"] = [{"kind": "file", "file": f} for f in files]
    await log_activity(
        engine,
        None,
        workspace_id=workspace_id,
        activity_type="a2a_receive",
        method="notify",
        summary="Agent message: " + truncate_bytes(body.message, NOTIFY_SUMMARY_BYTES),
        response_body=response,
        status="ok",
    )


async def _live_workspace_name(engine: AsyncEngine, workspace_id: str) -> str:
    try:
        async with engine.connect() as conn:
            row = await get_workspace(conn, workspace_id)
    except Exception:
        log.exception("workspace lookup failed for %s", workspace_id)
        row = None
    if row is None or row.status == Status.REMOVED:
        raise ApiError(404, "workspace not found")
    return str(row.name)


async def prune_activity(engine: AsyncEngine, retention_days: int) -> int:
    """Delete rows older than `retention_days` days; the number deleted (retention loop)."""
    cutoff = utcnow() - timedelta(days=retention_days)
    async with engine.begin() as conn:
        return await store.delete_older_than(conn, cutoff)
