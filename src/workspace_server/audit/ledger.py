"""The ledger's HMAC chain, recomputed exactly as the agents' `molecule_audit` writer computes it.

- Key: PBKDF2-HMAC-SHA256 of `AUDIT_LEDGER_SALT` (the password) with the fixed salt
  `molecule-audit-ledger-v1`, 210,000 iterations, 32 bytes. Deriving it costs ~0.1 s of CPU, so it is
  done once per salt, off the event loop.
- Row HMAC: hex HMAC-SHA256 over `json.dumps(fields, sort_keys=True, separators=(",", ":"))` of the
  eleven fields below (not `hmac`, not `workspace_id`); the timestamp is UTC to the second
  (`YYYY-MM-DDTHH:MM:SSZ`), so sub-seconds never change it. This is the Python writer's own call
  (ASCII escapes included), which is what the stored HMACs were made with.
- Chain: per agent_id in page order, `prev_hmac` is the previous row's `hmac`, NULL for the first.
Every comparison of HMACs is constant-time (#651).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

PBKDF2_SALT = b"molecule-audit-ledger-v1"
PBKDF2_ITERATIONS = 210_000
KEY_BYTES = 32
_MAX_CACHED_KEYS = 8  # one salt per deployment; a few more only in tests

_keys: dict[str, bytes] = {}


def derive_key(salt: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", salt.encode(), PBKDF2_SALT, PBKDF2_ITERATIONS, KEY_BYTES)


async def hmac_key(salt: str) -> bytes | None:
    """The cached key for `salt`; None when no salt is configured (the chain cannot be verified)."""
    if not salt:
        return None
    key = _keys.get(salt)
    if key is None:
        key = await anyio.to_thread.run_sync(derive_key, salt)
        if len(_keys) >= _MAX_CACHED_KEYS:
            _keys.clear()
        _keys[salt] = key
    return key


def ledger_timestamp(ts: datetime) -> str:
    """UTC to the second with a `Z`, zero-padded like Go's `2006-01-02T15:04:05Z` layout."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    u = ts.astimezone(UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}Z"


def canonical(row: Any) -> bytes:
    fields = {
        "agent_id": row.agent_id,
        "human_oversight_flag": bool(row.human_oversight_flag),
        "id": row.id,
        "input_hash": row.input_hash,
        "model_used": row.model_used,
        "operation": row.operation,
        "output_hash": row.output_hash,
        "prev_hmac": row.prev_hmac,
        "risk_flag": bool(row.risk_flag),
        "session_id": row.session_id,
        "timestamp": ledger_timestamp(row.timestamp),
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def row_hmac(key: bytes, row: Any) -> str:
    """The 64-hex-char HMAC the row must carry."""
    return hmac.new(key, canonical(row), hashlib.sha256).hexdigest()


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def verify_chain(key: bytes, rows: Iterable[Any]) -> bool:
    """True when every row's HMAC recomputes and links to its agent's previous row (an empty page too)."""
    last: dict[str, str] = {}
    for row in rows:
        if not _same(row.hmac, row_hmac(key, row)):
            return False
        if not _same(row.prev_hmac, last.get(row.agent_id)):
            return False
        last[row.agent_id] = row.hmac
    return True
