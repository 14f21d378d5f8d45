"""Memory rules (spec 05 §2): who may write which scope, redaction, the GLOBAL audit row, who sees what.

Used by the REST routes (`/workspaces/:id/memories`) and by the MCP tools `commit_memory` /
`recall_memory`, which differ only where the reference differs (GLOBAL refused, namespace, recall query).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.activity.service import log_activity, sorted_keys
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.time import rfc3339
from workspace_server.context import AppContext
from workspace_server.db.schema import MEMORY_SCOPES
from workspace_server.memories import store
from workspace_server.memories.redact import redact_secrets
from workspace_server.registry.access import decide, fetch_chains
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "general"
MAX_NAMESPACE_BYTES = 50
MAX_LIMIT = 50
GLOBAL_DELIMITER = "[MEMORY id={id} scope=GLOBAL from={ws}]: {content}"
_LEADING_INT = re.compile(r"\s*([+-]?[0-9]+)")  # what Go's fmt.Sscanf("%d") reads


class CommitBody(BaseModel):
    content: str = ""
    scope: str = ""
    namespace: str | None = None


class MemoryRefused(Exception):
    """A refusal the MCP tools turn into a JSON-RPC error (their messages are the reference's)."""


def redact(ws_id: str, content: str) -> str:
    clean, fired = redact_secrets(content)
    for label in fired:  # the label only: the value must never reach a log
        log.warning("memory write: redacted %s pattern for workspace %s (SAFE-T1201)", label, ws_id)
    return clean


async def _workspace(conn: AsyncConnection, ws_id: str) -> Row[Any]:
    row = await get_workspace(conn, ws_id)
    if row is None:
        raise ApiError(404, "workspace not found")
    return row


async def commit(ctx: AppContext, ws_id: str, body: CommitBody) -> dict[str, Any]:
    """`POST /workspaces/:id/memories` → 201 `{"id","namespace","scope"}`."""
    if not body.content or not body.scope or "\x00" in body.content:
        raise ApiError(400, "invalid request body")
    if body.scope not in MEMORY_SCOPES:
        raise ApiError(400, "scope must be LOCAL, TEAM, or GLOBAL")
    namespace = body.namespace or DEFAULT_NAMESPACE
    if len(namespace.encode()) > MAX_NAMESPACE_BYTES or "\x00" in namespace:
        raise ApiError(400, "namespace must be <= 50 characters")
    async with ctx.engine.begin() as conn:
        row = await _workspace(conn, ws_id)
        if body.scope == "GLOBAL" and row.parent_id is not None:
            raise ApiError(403, "only root workspaces can write GLOBAL memories")
        content = redact(ws_id, body.content)
        if body.scope == "GLOBAL":  # a stored fake delimiter must not read back as structure (#807)
            content = content.replace("[MEMORY ", "[_MEMORY ")
        try:
            memory_id, _ = await store.insert_memory(
                conn, workspace_id=ws_id, content=content, scope=body.scope, namespace=namespace
            )
        except Exception:
            log.exception("storing a memory for %s failed", ws_id)
            raise ApiError(500, "failed to store memory") from None
        if body.scope == "GLOBAL":
            await _audit_global(conn, ws_id, memory_id, namespace, content)
    return {"id": memory_id, "namespace": namespace, "scope": body.scope}


async def _audit_global(
    conn: AsyncConnection, ws_id: str, memory_id: str, namespace: str, content: str
) -> None:
    """Forensic trail of GLOBAL writes: a hash of what was stored, never the text (#767)."""
    digest = hashlib.sha256(content.encode()).hexdigest()
    await log_activity(
        conn,
        None,
        workspace_id=ws_id,
        activity_type="memory_write_global",
        source_id=ws_id,
        summary=f"GLOBAL memory written: id={memory_id} namespace={namespace}",
        request_body={"content_sha256": digest, "memory_id": memory_id, "namespace": namespace},
        status="ok",
    )


def parse_limit(raw: str | None) -> int:
    """1–49 are used as given; absent, unparsable, ≤0 or ≥50 mean 50 (the reference's clamp)."""
    match = _LEADING_INT.match(raw or "")
    if not match:
        return MAX_LIMIT
    n = int(match.group(1))
    return n if 0 < n < MAX_LIMIT else MAX_LIMIT


async def search(
    ctx: AppContext, ws_id: str, *, scope: str, q: str, namespace: str, limit: int
) -> list[dict[str, Any]]:
    """`GET /workspaces/:id/memories`."""
    try:
        async with ctx.engine.connect() as conn:
            row = await get_workspace(conn, ws_id)
            parent = row.parent_id if row is not None else None
            rows = await store.search(
                conn,
                workspace_id=ws_id,
                scope=scope,
                team_anchor=parent or ws_id,
                namespace=namespace,
                q=q,
                limit=limit,
            )
            rows = await _reachable(conn, ws_id, rows)
    except Exception:
        log.exception("memory search failed for %s", ws_id)
        raise ApiError(500, "search failed") from None
    return [_rest_item(r) for r in rows]


async def _reachable(conn: AsyncConnection, ws_id: str, rows: list[Row[Any]]) -> list[Row[Any]]:
    """Drop TEAM rows of workspaces the caller may not talk to (one hierarchy lookup for the page)."""
    foreign = sorted({r.workspace_id for r in rows if r.scope == "TEAM" and r.workspace_id != ws_id})
    if not foreign:
        return rows
    chains = await fetch_chains(conn, [ws_id, *foreign])
    allowed = {other for other in foreign if decide(ws_id, other, chains)}
    return [r for r in rows if r.scope != "TEAM" or r.workspace_id in (ws_id, *allowed)]


def _rest_item(row: Row[Any]) -> dict[str, Any]:
    content = row.content
    if row.scope == "GLOBAL":  # stored prompt injection must read as data, not instructions (#767)
        content = GLOBAL_DELIMITER.format(id=row.id, ws=row.workspace_id, content=content)
    return sorted_keys(
        {
            "id": row.id,
            "workspace_id": row.workspace_id,
            "content": content,
            "scope": row.scope,
            "namespace": row.namespace,
            "created_at": rfc3339(row.created_at),
        }
    )


async def delete(ctx: AppContext, ws_id: str, memory_id: str) -> None:
    """`DELETE /workspaces/:id/memories/:memoryId`: own rows only."""
    canonical = parse_uuid(memory_id)
    deleted = False
    if canonical is not None:
        try:
            async with ctx.engine.begin() as conn:
                deleted = await store.delete_memory(conn, ws_id, canonical)
        except Exception:
            log.exception("deleting memory %s of %s failed", canonical, ws_id)
            raise ApiError(500, "delete failed") from None
    if not deleted:
        raise ApiError(404, "memory not found or not owned by this workspace")


# ---- the MCP bridge's variants ----


async def mcp_commit(ctx: AppContext, ws_id: str, content: str, scope: str) -> dict[str, str]:
    """`commit_memory`: LOCAL (default) or TEAM, redacted, namespace = the workspace id (as upstream)."""
    if not content:
        raise MemoryRefused("content is required")
    scope = scope or "LOCAL"
    if scope == "GLOBAL":
        raise MemoryRefused("GLOBAL scope is not permitted via the MCP bridge — use LOCAL or TEAM")
    if scope not in ("LOCAL", "TEAM"):
        raise MemoryRefused("scope must be LOCAL or TEAM")
    if "\x00" in content:
        raise MemoryRefused("content must not contain NUL characters")
    clean = redact(ws_id, content)
    try:
        async with ctx.engine.begin() as conn:
            if await get_workspace(conn, ws_id) is None:
                raise MemoryRefused("workspace not found")
            memory_id, _ = await store.insert_memory(
                conn, workspace_id=ws_id, content=clean, scope=scope, namespace=ws_id
            )
    except MemoryRefused:
        raise
    except Exception:
        log.exception("commit_memory for %s failed", ws_id)
        raise MemoryRefused("failed to save memory") from None
    await log_activity(  # surfaces the write in the canvas's Agent Comms tab (GH#1490)
        ctx.engine,
        ctx.events,
        workspace_id=ws_id,
        activity_type="memory_write",
        summary=f"Memory committed [{scope}] id={memory_id[:8]}",
        status="ok",
    )
    return {"id": memory_id, "scope": scope}


async def mcp_recall(ctx: AppContext, ws_id: str, query: str, scope: str) -> list[dict[str, Any]]:
    """`recall_memory`: newest 50 matches, in the reference's field order."""
    if scope == "GLOBAL":
        raise MemoryRefused("GLOBAL scope is not permitted via the MCP bridge — use LOCAL, TEAM, or empty")
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.recall(conn, ws_id, scope, query)
    except Exception:
        log.exception("recall_memory for %s failed", ws_id)
        raise MemoryRefused("memory search failed") from None
    return [
        {"id": r.id, "content": r.content, "scope": r.scope, "created_at": rfc3339(r.created_at)}
        for r in rows
    ]
