"""`GET /workspaces/:id/audit` (spec 05 §5): filters, pagination, and the inline chain verdict.

`chain_valid` is null when there is nothing to verify against (no `AUDIT_LEDGER_SALT`) or when the page
does not start at the first matching row (offset > 0): a verdict there would be a false alarm (#651).
Filtered windows that do not start at an agent's first row still report false, as upstream documents.
Filter values no stored row can hold (a workspace id that is not a UUID, text with NUL) match nothing
and are answered without a query rather than with a database error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workspace_server.audit import ledger, store
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.time import parse_rfc3339, rfc3339
from workspace_server.context import AppContext

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
FROM_ERROR = "from must be RFC 3339 (e.g. 2026-04-17T00:00:00Z)"
TO_ERROR = "to must be RFC 3339 (e.g. 2026-04-17T23:59:59Z)"
_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)  # what strconv.Atoi accepts
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class AuditQuery:
    filters: store.Filters | None  # None: no row can match
    limit: int
    offset: int


def _atoi(raw: str | None) -> int | None:
    if raw is None or not _GO_INT.fullmatch(raw):
        return None
    n = int(raw)
    return n if _INT64[0] <= n <= _INT64[1] else None


def _limit(raw: str | None) -> int:
    n = _atoi(raw)
    return min(n, MAX_LIMIT) if n is not None and n > 0 else DEFAULT_LIMIT


def _offset(raw: str | None) -> int:
    n = _atoi(raw)
    return n if n is not None and n >= 0 else 0


def _instant(raw: str, error: str) -> datetime | None:
    if not raw:
        return None
    parsed = parse_rfc3339(raw)
    if parsed is None:
        raise ApiError(400, error)
    return parsed


def parse_query(raw_ws: str, params: Mapping[str, str]) -> AuditQuery:
    since = _instant(params.get("from", ""), FROM_ERROR)
    until = _instant(params.get("to", ""), TO_ERROR)
    agent_id, session_id = params.get("agent_id", ""), params.get("session_id", "")
    ws_id = parse_uuid(raw_ws)
    filters = None
    if ws_id is not None and "\x00" not in agent_id + session_id:
        filters = store.Filters(ws_id, agent_id, session_id, since, until)
    return AuditQuery(filters, _limit(params.get("limit")), _offset(params.get("offset")))


def event(row: Any) -> dict[str, Any]:
    """All thirteen columns in the reference's struct field order."""
    return {
        "id": row.id,
        "timestamp": rfc3339(row.timestamp),
        "agent_id": row.agent_id,
        "session_id": row.session_id,
        "operation": row.operation,
        "input_hash": row.input_hash,
        "output_hash": row.output_hash,
        "model_used": row.model_used,
        "human_oversight_flag": row.human_oversight_flag,
        "risk_flag": row.risk_flag,
        "prev_hmac": row.prev_hmac,
        "hmac": row.hmac,
        "workspace_id": row.workspace_id,
    }


async def _fetch(ctx: AppContext, q: AuditQuery) -> tuple[list[Any], int]:
    if q.filters is None:
        return [], 0
    try:
        async with ctx.engine.connect() as conn:
            total = await store.count(conn, q.filters)
            rows = await store.page(conn, q.filters, limit=q.limit, offset=q.offset)
    except Exception:
        log.exception("audit query for %s failed", q.filters.workspace_id)
        raise ApiError(500, "query failed") from None
    return rows, total


async def query(ctx: AppContext, q: AuditQuery) -> dict[str, Any]:
    """`{"chain_valid","events","total"}` (a map in Go: sorted keys); `events` is `[]` when empty."""
    rows, total = await _fetch(ctx, q)
    chain_valid: bool | None = None
    if q.offset == 0:
        key = await ledger.hmac_key(ctx.settings.AUDIT_LEDGER_SALT)
        if key is not None:
            chain_valid = ledger.verify_chain(key, rows)
    return {"chain_valid": chain_valid, "events": [event(r) for r in rows], "total": total}
