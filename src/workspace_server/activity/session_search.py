"""`GET /workspaces/:id/session-search` (spec 04 §4): one search over a workspace's own activity rows and
memories, newest first, without a storage layer of its own.

`q` (trimmed) is a case-insensitive substring matched against content, label, method, status and the
JSON bodies' text; `%` and `_` in it are literal characters here, not wildcards as upstream.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workspace_server.activity.service import sorted_keys
from workspace_server.common.errors import ApiError
from workspace_server.common.time import rfc3339
from workspace_server.db.schema import activity_logs, agent_memories
from workspace_server.db.types import JSONType

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


def parse_params(q: str | None, limit: str | None) -> tuple[str, int]:
    """(trimmed query, limit): limit defaults to 50, caps at 200; anything not a positive int is 50."""
    n = DEFAULT_LIMIT
    if limit is not None and _INT.fullmatch(limit) and int(limit) > 0:
        n = min(int(limit), MAX_LIMIT)
    return (q or "").strip(), n


def _items(ws_id: str) -> sa.Subquery:
    a, m = activity_logs, agent_memories
    activity = sa.select(
        sa.literal("activity", sa.Text).label("kind"),
        a.c.id,
        a.c.workspace_id,
        a.c.activity_type.label("label"),
        sa.func.coalesce(a.c.summary, "").label("content"),
        sa.func.coalesce(a.c.method, "").label("method"),
        sa.func.coalesce(a.c.status, "").label("status"),
        a.c.request_body,
        a.c.response_body,
        a.c.created_at,
    ).where(a.c.workspace_id == ws_id)
    memory = sa.select(
        sa.literal("memory", sa.Text).label("kind"),
        m.c.id,
        m.c.workspace_id,
        sa.cast(m.c.scope, sa.Text).label("label"),
        m.c.content,
        sa.literal("", sa.Text).label("method"),
        sa.literal("", sa.Text).label("status"),
        sa.cast(sa.null(), JSONType).label("request_body"),
        sa.cast(sa.null(), JSONType).label("response_body"),
        m.c.created_at,
    ).where(m.c.workspace_id == ws_id)
    return sa.union_all(activity, memory).subquery("session_items")


def _matches(items: sa.Subquery, q: str) -> sa.ColumnElement[bool]:
    def has(col: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        return col.icontains(q, autoescape=True)

    def body_text(col: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        return sa.func.coalesce(sa.cast(col, sa.Text), "")

    c = items.c
    return sa.or_(
        has(c.content),
        has(c.label),
        has(c.method),
        has(c.status),
        has(body_text(c.request_body)),
        has(body_text(c.response_body)),
    )


async def _query(conn: AsyncConnection, ws_id: str, q: str, limit: int) -> list[Row[Any]]:
    items = _items(ws_id)
    stmt = sa.select(items)
    if q:
        stmt = stmt.where(_matches(items, q))
    stmt = stmt.order_by(items.c.created_at.desc(), items.c.id).limit(limit)
    return list((await conn.execute(stmt)).all())


def _item(row: Row[Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "kind": row.kind,
        "id": row.id,
        "workspace_id": row.workspace_id,
        "label": row.label,
        "content": row.content,
        "method": row.method,
        "status": row.status,
        "created_at": rfc3339(row.created_at),
    }
    for col in ("request_body", "response_body"):  # present only when non-null, as the reference
        if getattr(row, col) is not None:
            item[col] = getattr(row, col)
    return sorted_keys(item)


async def session_search(engine: AsyncEngine, ws_id: str, q: str, limit: int) -> list[dict[str, Any]]:
    try:
        async with engine.connect() as conn:
            rows = await _query(conn, ws_id, q, limit)
    except Exception:
        log.exception("session search failed for %s", ws_id)
        raise ApiError(500, "session search failed") from None
    return [_item(r) for r in rows]
