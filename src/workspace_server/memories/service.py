"""Memory rules (spec 05 §2): who may write which scope, redaction, the GLOBAL audit row, who sees what.

Used by the REST routes (`/workspaces/:id/memories`), by the MCP tools `commit_memory` /
`recall_memory`, which differ only where the reference differs (GLOBAL refused, namespace, recall query),
and by the admin backup (`/admin/memories/export|import`), which moves memories between deployments by
workspace *name* (ids change when workspaces are re-created) and redacts on the way out and on the way in.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from pydantic import BaseModel
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.activity.service import log_activity, sorted_keys
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonbody import parse_json
from workspace_server.common.jsonnum import storable_json
from workspace_server.common.time import parse_rfc3339, rfc3339
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


def stored_content(ws_id: str, content: str, scope: str) -> str:
    """What is stored for a write: secrets redacted; for GLOBAL also the read delimiter defused."""
    clean = redact(ws_id, content)
    if scope == "GLOBAL":  # a stored fake delimiter must not read back as structure (#807)
        clean = clean.replace("[MEMORY ", "[_MEMORY ")
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
        content = stored_content(ws_id, body.content, body.scope)
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


# ---- admin backup: GET /admin/memories/export, POST /admin/memories/import ----

# The reference appended the JSON decoder's own error text; these say the same without parser internals.
IMPORT_BAD_JSON = "invalid JSON: the body is not a JSON document"
IMPORT_NOT_ARRAY = "invalid JSON: expected an array of memories"
IMPORT_CHUNK = 500  # entries per transaction


@dataclass(frozen=True)
class ImportItem:
    workspace_name: str
    content: str
    scope: str
    namespace: str
    created_at: datetime | None


def _export_item(row: Row[Any]) -> dict[str, Any]:
    """One exported memory in the reference's struct order; content re-redacted for legacy rows (#1131)."""
    return {
        "id": row.id,
        "content": redact(row.workspace_id, row.content),
        "scope": row.scope,
        "namespace": row.namespace,
        "created_at": rfc3339(row.created_at),
        "workspace_name": row.workspace_name,
    }


async def export_all(ctx: AppContext) -> list[dict[str, Any]]:
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.export_rows(conn)
    except Exception:
        log.exception("memory export failed")
        raise ApiError(500, "export query failed") from None
    return [_export_item(r) for r in rows]


def parse_import(raw: bytes) -> list[Any]:
    """The import body: a JSON array (`null` reads as an empty one, as Go decodes it)."""
    data = parse_json(raw, IMPORT_BAD_JSON, check_strings=False)  # a bad string is one entry's error
    if data is None:
        return []
    if not isinstance(data, list):
        raise ApiError(400, IMPORT_NOT_ARRAY)
    return data


def _text(value: Any) -> TypeGuard[str]:
    """A string both databases can store (no NUL, no lone surrogate)."""
    return isinstance(value, str) and storable_json(value)


def _namespace(value: Any) -> str | None:
    if value is None or value == "":
        return DEFAULT_NAMESPACE
    if not _text(value) or len(value.encode()) > MAX_NAMESPACE_BYTES:
        return None
    return str(value)


def import_item(raw: Any) -> ImportItem | None:
    """A valid backup entry, or None (counted as an error): content non-empty, scope LOCAL/TEAM/GLOBAL,
    workspace_name a string, namespace ≤ 50 bytes, created_at RFC 3339 when given."""
    if not isinstance(raw, dict):
        return None
    content, scope, name = raw.get("content"), raw.get("scope"), raw.get("workspace_name")
    if not _text(content) or not content or not _text(name) or not isinstance(scope, str):
        return None
    namespace = _namespace(raw.get("namespace"))
    if scope not in MEMORY_SCOPES or namespace is None:
        return None
    created = raw.get("created_at")
    created_at = None
    if created is not None and created != "":
        created_at = parse_rfc3339(created) if isinstance(created, str) else None
        if created_at is None:
            return None
    return ImportItem(name, content, scope, namespace, created_at)


async def import_all(ctx: AppContext, entries: list[Any]) -> dict[str, int]:
    """`{"errors","imported","skipped","total"}`, entries taken in chunks of IMPORT_CHUNK."""
    run = _Import(ctx)
    for start in range(0, len(entries), IMPORT_CHUNK):
        await run.chunk(entries[start : start + IMPORT_CHUNK])
    return {**run.counts, "total": len(entries)}


def _digest(content: str) -> bytes:
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).digest()


class _Import:
    """One import request. Each target workspace's existing memories are read once (as digests), so the
    duplicate check is a set lookup rather than a scan of the workspace per entry; a chunk is one
    transaction and one bulk INSERT. If a chunk fails, its entries are retried one per transaction, so a
    bad entry neither stops nor undoes the others (the reference ran one statement per entry)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.counts = {"errors": 0, "imported": 0, "skipped": 0}
        self.targets: dict[str, str | None] = {}  # workspace name → id
        self.held: dict[str, set[tuple[str, bytes]]] = {}  # workspace id → (scope, content digest)

    async def chunk(self, raws: list[Any]) -> None:
        items = [i for i in map(import_item, raws) if i is not None]
        self.counts["errors"] += len(raws) - len(items)
        try:
            async with self.ctx.engine.begin() as conn:
                rows = await self._plan(conn, items)
                if rows:
                    await store.insert_memories(conn, rows)
        except Exception:
            log.exception("memory import: a chunk failed; retrying its entries one by one")
            for item in items:
                self.counts[await self._single(item)] += 1
            return
        self._remember(rows)
        self.counts["imported"] += len(rows)
        self.counts["skipped"] += len(items) - len(rows)

    async def _plan(self, conn: AsyncConnection, items: list[ImportItem]) -> list[dict[str, Any]]:
        """The rows to insert, duplicates within the chunk dropped too."""
        rows: list[dict[str, Any]] = []
        planned: set[tuple[str, str, bytes]] = set()
        for item in items:
            row = await self._row(conn, item)
            if row is None:
                continue
            key = (row["workspace_id"], row["scope"], _digest(row["content"]))
            if key not in planned:
                planned.add(key)
                rows.append(row)
        return rows

    async def _single(self, item: ImportItem) -> str:
        try:
            async with self.ctx.engine.begin() as conn:
                row = await self._row(conn, item)
                if row is None:
                    return "skipped"
                await store.insert_memories(conn, [row])
        except Exception:
            log.exception("memory import: an entry for workspace %r failed", item.workspace_name)
            return "errors"
        self._remember([row])
        return "imported"

    async def _row(self, conn: AsyncConnection, item: ImportItem) -> dict[str, Any] | None:
        """The row for an entry; None to skip it (no such workspace, or the memory is already there)."""
        ws_id = await self._target(conn, item.workspace_name)
        if ws_id is None:
            return None
        # redacted before the duplicate check, so re-importing a secret-bearing backup is a duplicate (#1132)
        content = stored_content(ws_id, item.content, item.scope)
        if (item.scope, _digest(content)) in self.held[ws_id]:
            return None
        return {
            "workspace_id": ws_id,
            "content": content,
            "scope": item.scope,
            "namespace": item.namespace,
            "created_at": item.created_at,
        }

    async def _target(self, conn: AsyncConnection, name: str) -> str | None:
        if name not in self.targets:
            ws_id = await store.workspace_id_by_name(conn, name)
            if ws_id is None:
                log.info("memory import: no workspace named %r, its entries are skipped", name)
            elif ws_id not in self.held:
                held = await store.memory_texts(conn, ws_id)
                self.held[ws_id] = {(scope, _digest(content)) for content, scope in held}
            self.targets[name] = ws_id
        return self.targets[name]

    def _remember(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.held[row["workspace_id"]].add((row["scope"], _digest(row["content"])))
