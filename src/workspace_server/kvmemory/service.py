"""KV memory rules (spec 05 §3): TTLs, the `if_match_version` guard, and the reference's exact bodies.

Without a guard a write is a last-write-wins upsert. With `if_match_version: N` it lands only while the
stored row is at version N; N = 0 means "create, the key must not exist". A refused write is a 409 that
names the version the caller expected and the one stored, so the caller can re-read and retry. Expired
rows are invisible to reads but keep their version, and so still count for the guard (as upstream).

Where the reference answered 500 to a client mistake (an omitted `value`, a wrong type, a TTL too large to
represent) this answers 400 with a message saying what was wrong (docs/decisions.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.activity.service import sorted_keys
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.kvmemory import store
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

BAD_BODY = "invalid request body"
KEY_NOT_FOUND = "key not found"
# Postgres cannot index a (workspace_id, key) entry much over 2.7 kB; a longer key would be a 500 there.
MAX_KEY_BYTES = 1024
INT64_MAX = 2**63 - 1
TTL_ERROR = "ttl_seconds must be a non-negative integer"
VERSION_ERROR = "if_match_version must be an integer"


@dataclass(frozen=True)
class SetRequest:
    key: str
    value: Any
    ttl_seconds: int | None
    if_match_version: int | None


# the body parse_set accepts, for /openapi.json
SET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "value"],
    "properties": {
        "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES // 4},
        "value": {},
        "ttl_seconds": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": INT64_MAX}, {"type": "null"}]},
        "if_match_version": {
            "anyOf": [{"type": "integer", "minimum": -INT64_MAX - 1, "maximum": INT64_MAX}, {"type": "null"}]
        },
    },
}


def _optional_int(data: dict[str, Any], name: str, error: str, minimum: int) -> int | None:
    """A JSON integer in [minimum, int64 max], or None when absent or null (Go's `*int`)."""
    raw = data.get(name)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not minimum <= raw <= INT64_MAX:
        raise ApiError(400, error)
    return raw


def parse_set(data: Any) -> SetRequest:
    """Validate a `POST /workspaces/:id/memory` body; every refusal is a 400."""
    if not isinstance(data, dict):  # read_json already refused what the databases cannot store
        raise ApiError(400, BAD_BODY)
    key = data.get("key")
    if key is None or key == "":
        raise ApiError(400, "key is required")
    if not isinstance(key, str):
        raise ApiError(400, "key must be a string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ApiError(400, f"key must be at most {MAX_KEY_BYTES} bytes")
    if "value" not in data:
        raise ApiError(400, "value is required")
    return SetRequest(
        key=key,
        value=data["value"],
        ttl_seconds=_optional_int(data, "ttl_seconds", TTL_ERROR, 0),
        if_match_version=_optional_int(data, "if_match_version", VERSION_ERROR, -INT64_MAX - 1),
    )


def _expiry(now: datetime, ttl_seconds: int | None) -> datetime | None:
    """now + ttl; no TTL clears any earlier expiry (the reference's behaviour)."""
    if ttl_seconds is None:
        return None
    try:
        return now + timedelta(seconds=ttl_seconds)
    except OverflowError:
        raise ApiError(400, "ttl_seconds is too large") from None


def entry(row: Any) -> dict[str, Any]:
    """One entry in the reference's struct order; `expires_at` omitted when there is none."""
    out: dict[str, Any] = {"key": row.key, "value": row.value, "version": row.version}
    if row.expires_at is not None:
        out["expires_at"] = rfc3339(row.expires_at)
    out["updated_at"] = rfc3339(row.updated_at)
    return out


def _usable_key(key: str) -> bool:
    """A path key that can reach SQL (a `%00` in the URL would be a database error, not a miss)."""
    return bool(key) and "\x00" not in key


async def list_entries(ctx: AppContext, raw_id: str) -> list[dict[str, Any]]:
    ws_id = parse_uuid(raw_id)
    if ws_id is None:
        return []
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.list_live(conn, ws_id, utcnow())
    except Exception:
        log.exception("listing KV memory of %s failed", ws_id)
        raise ApiError(500, "query failed") from None
    return [entry(r) for r in rows]


async def get_entry(ctx: AppContext, raw_id: str, key: str) -> dict[str, Any]:
    ws_id = parse_uuid(raw_id)
    if ws_id is None or not _usable_key(key):
        raise ApiError(404, KEY_NOT_FOUND)
    try:
        async with ctx.engine.connect() as conn:
            row = await store.get_live(conn, ws_id, key, utcnow())
    except Exception:
        log.exception("reading KV memory of %s failed", ws_id)
        raise ApiError(500, "query failed") from None
    if row is None:
        raise ApiError(404, KEY_NOT_FOUND)
    return entry(row)


def _conflict(expected: int, current: int | None) -> ApiError:
    """409 with the reference's sorted keys: current_version, error, expected_version."""
    error = "if_match_version mismatch"
    if current is None:
        error += ": key does not exist"
    body = {"error": error, "expected_version": expected, "current_version": current}
    return ApiError(409, None, **sorted_keys(body))


async def _guarded_write(
    conn: AsyncConnection, ws_id: str, req: SetRequest, expires_at: datetime | None, now: datetime
) -> int:
    """The conditional write: update at version N, or create when N is 0; else a 409."""
    expected = req.if_match_version
    assert expected is not None
    args = (conn, ws_id, req.key, req.value, expires_at, now)
    version = await store.update_if_version(*args, expected)
    if version is None and expected == 0:
        version = await store.create_if_absent(*args)
    if version is not None:
        return version
    try:
        current = await store.current_version(conn, ws_id, req.key)
    except Exception:
        log.exception("probing the KV memory version of %s failed", ws_id)
        raise ApiError(500, "failed to probe current version") from None
    raise _conflict(expected, current)


async def _workspace_exists(ctx: AppContext, ws_id: str) -> bool:
    try:
        async with ctx.engine.connect() as conn:
            return await get_workspace(conn, ws_id) is not None
    except Exception:
        log.exception("workspace lookup for %s failed", ws_id)
        return True  # unknown: report the write failure, not a missing workspace


async def set_entry(ctx: AppContext, raw_id: str, req: SetRequest) -> dict[str, Any]:
    """`POST /workspaces/:id/memory` → `{"key","status":"ok","version"}`."""
    ws_id = parse_uuid(raw_id)
    if ws_id is None:
        raise ApiError(404, "workspace not found")
    now = utcnow()
    expires_at = _expiry(now, req.ttl_seconds)
    try:
        async with ctx.engine.begin() as conn:
            if req.if_match_version is None:
                version = await store.upsert(conn, ws_id, req.key, req.value, expires_at, now)
            else:
                version = await _guarded_write(conn, ws_id, req, expires_at, now)
    except ApiError:
        raise
    except IntegrityError:  # the only constraint left to fail is the workspace foreign key
        if not await _workspace_exists(ctx, ws_id):
            raise ApiError(404, "workspace not found") from None
        log.exception("setting KV memory of %s failed", ws_id)
        raise ApiError(500, "failed to set memory") from None
    except Exception:
        log.exception("setting KV memory of %s failed", ws_id)
        raise ApiError(500, "failed to set memory") from None
    return sorted_keys({"status": "ok", "key": req.key, "version": version})


async def delete_entry(ctx: AppContext, raw_id: str, key: str) -> None:
    """Idempotent: deleting a missing key (or workspace) is still `{"status":"deleted"}`."""
    ws_id = parse_uuid(raw_id)
    if ws_id is None or not _usable_key(key):
        return
    try:
        async with ctx.engine.begin() as conn:
            await store.delete(conn, ws_id, key)
    except Exception:
        log.exception("deleting KV memory of %s failed", ws_id)
        raise ApiError(500, "failed to delete") from None
