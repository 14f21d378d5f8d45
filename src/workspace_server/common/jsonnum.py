"""JSON numbers and parsing as the Go reference produces and accepts them.

Go marshals a float64 with the shortest representation, so a whole value prints as `0`/`1`/`100`, never
`1.0` as Python does; clients that compare bodies byte-for-byte (and our wire tests) see the difference.
Go's decoder also rejects the `NaN`/`Infinity` literals Python's `json` accepts by default.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Go switches to exponent form at 1e21; below that a whole float is printed as an integer.
_GO_INT_LIMIT = 1e21


def go_float(value: float | int | None) -> float | int:
    """A float column value shaped so `json.dumps` prints it like Go's float64 (`0`, `1`, `2.5`)."""
    if value is None:
        return 0
    v = float(value)
    if math.isfinite(v) and v.is_integer() and abs(v) < _GO_INT_LIMIT:
        return int(v)
    return v


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


# one decoder for every call: `json.loads(..., parse_constant=...)` builds a new one each time
_STRICT = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(raw: bytes | str) -> Any:
    """`json.loads` without NaN/Infinity (invalid JSON, as Go sees it). Raises ValueError, also for
    nesting too deep for the parser (which raises RecursionError: a 500 where callers expect bad input)."""
    try:
        if not isinstance(raw, str):
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads does
        return _STRICT.decode(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def contains_nul(value: Any) -> bool:
    """True if any string (key or value) in a decoded JSON document holds U+0000.

    Postgres TEXT and JSONB cannot store NUL; rejecting it up front keeps such input a 400, not a 500.
    """
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def scrub_nul(value: Any) -> Any:
    """A copy with every U+0000 in strings and keys replaced by U+FFFD (for logging what Postgres
    could not otherwise store, e.g. an A2A message that carried a NUL)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {scrub_nul(k): scrub_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_nul(v) for v in value]
    return value
