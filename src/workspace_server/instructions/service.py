"""Platform instructions (spec 04 §6): operator rules prepended to agents' system prompts.

Scopes: `global` (every workspace) and `workspace` (one workspace, named by `scope_target`); `team` is
in the schema but refused by the API, as upstream (no team tables exist). Caps are in bytes, as Go's
`len` counts them, so the messages say "chars" exactly as the reference's do.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, StrictBool, StrictInt, StrictStr

from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid, uuid_or_raw
from workspace_server.common.time import rfc3339
from workspace_server.context import AppContext
from workspace_server.instructions import store

log = logging.getLogger(__name__)

MAX_CONTENT_BYTES = 8192
MAX_TITLE_BYTES = 200
INT32 = (-(2**31), 2**31 - 1)  # the column is INTEGER; larger values are bad input, not a DB error
CREATE_REQUIRED = "scope, title, and content are required"
HEADERS = {"global": "Platform-Wide Rules", "workspace": "Role-Specific Rules"}


class CreateBody(BaseModel):
    scope: StrictStr = ""
    scope_target: StrictStr | None = None
    title: StrictStr = ""
    content: StrictStr = ""
    priority: StrictInt = 0


class UpdateBody(BaseModel):
    title: StrictStr | None = None
    content: StrictStr | None = None
    priority: StrictInt | None = None
    enabled: StrictBool | None = None


def _check_caps(title: str | None, content: str | None) -> None:
    if content is not None and len(content.encode()) > MAX_CONTENT_BYTES:
        raise ApiError(400, "content exceeds 8192 chars")
    if title is not None and len(title.encode()) > MAX_TITLE_BYTES:
        raise ApiError(400, "title exceeds 200 chars")


def _in_int32(n: int | None) -> bool:
    return n is None or INT32[0] <= n <= INT32[1]


def item(row: Any) -> dict[str, Any]:
    """One instruction in the reference's struct field order."""
    return {
        "id": row.id,
        "scope": row.scope,
        "scope_target": row.scope_target,
        "title": row.title,
        "content": row.content,
        "priority": row.priority,
        "enabled": row.enabled,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


async def list_instructions(ctx: AppContext, *, scope: str, workspace_id: str) -> list[dict[str, Any]]:
    """`GET /instructions`: `?workspace_id` → its enabled global+workspace rows; else all (by `?scope`)."""
    try:
        async with ctx.engine.connect() as conn:
            if workspace_id:
                rows = await store.list_for_workspace(conn, uuid_or_raw(workspace_id))
            else:
                rows = await store.list_all(conn, scope)
    except Exception:
        log.exception("listing instructions failed")
        raise ApiError(500, "query failed") from None
    return [item(r) for r in rows]


async def create(ctx: AppContext, body: CreateBody) -> str:
    if not (body.scope and body.title and body.content) or not _in_int32(body.priority):
        raise ApiError(400, CREATE_REQUIRED)
    if body.scope not in ("global", "workspace"):
        raise ApiError(400, "scope must be global or workspace (team scope not yet supported)")
    if body.scope == "workspace" and not body.scope_target:
        raise ApiError(400, "scope_target required for workspace scope")
    _check_caps(body.title, body.content)
    # A workspace id in any letter case must still match the lowercase ids resolve compares with.
    target = body.scope_target
    if target:
        target = uuid_or_raw(target)
    try:
        async with ctx.engine.begin() as conn:
            return await store.insert(
                conn,
                scope=body.scope,
                scope_target=target,
                title=body.title,
                content=body.content,
                priority=body.priority,
            )
    except Exception:
        log.exception("creating an instruction failed")
        raise ApiError(500, "insert failed") from None


async def update(ctx: AppContext, raw_id: str, body: UpdateBody) -> None:
    if not _in_int32(body.priority):
        raise ApiError(400, "invalid request")
    _check_caps(body.title, body.content)
    row_id = parse_uuid(raw_id)
    if row_id is None:
        raise ApiError(404, "instruction not found")
    changes = {k: v for k, v in body.model_dump().items() if v is not None}
    try:
        async with ctx.engine.begin() as conn:
            found = await store.update(conn, row_id, changes)
    except Exception:
        log.exception("updating instruction %s failed", row_id)
        raise ApiError(500, "update failed") from None
    if not found:
        raise ApiError(404, "instruction not found")


async def delete(ctx: AppContext, raw_id: str) -> None:
    row_id = parse_uuid(raw_id)
    found = False
    if row_id is not None:
        try:
            async with ctx.engine.begin() as conn:
                found = await store.delete(conn, row_id)
        except Exception:
            log.exception("deleting instruction %s failed", row_id)
            raise ApiError(500, "delete failed") from None
    if not found:
        raise ApiError(404, "instruction not found")


def render(rows: list[Any]) -> str:
    """The prompt text: a header per scope, then `### <title>\\n<content>\\n\\n` per rule."""
    parts: list[str] = []
    current = ""
    for row in rows:
        if row.scope != current:
            parts.append(f"\n## {HEADERS.get(row.scope, HEADERS['global'])}\n\n")
            current = row.scope
        parts.append(f"### {row.title}\n{row.content}\n\n")
    return "".join(parts)


async def resolve(ctx: AppContext, raw_id: str) -> dict[str, str]:
    """`GET /workspaces/:id/instructions/resolve` → `{"instructions","workspace_id"}` (the id as given)."""
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.list_for_workspace(conn, uuid_or_raw(raw_id))
    except Exception:
        log.exception("resolving instructions for %s failed", raw_id)
        raise ApiError(500, "query failed") from None
    return {"instructions": render(rows), "workspace_id": raw_id}
