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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # `1e400`: Go refuses it as out of range; re-encoded it is not JSON
        raise ValueError(f"number {text} out of range")
    return value


# one decoder for every call: `json.loads(..., parse_constant=...)` builds a new one each time
_STRICT = json.JSONDecoder(parse_constant=_reject_constant)
_FINITE = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads_strict(raw: bytes | str) -> Any:
    """`json.loads` without NaN/Infinity (invalid JSON, as Go sees it). Raises ValueError, also for
    nesting too deep for the parser (which raises RecursionError: a 500 where callers expect bad input)."""
    return _decode(_STRICT, raw)


def loads_finite(raw: bytes | str) -> Any:
    """`loads_strict` that also refuses numbers beyond float range (`1e400`), as Go's decoder does: stored
    or re-encoded they would be `Infinity`, which is not JSON and which jsonb refuses."""
    return _decode(_FINITE, raw)


def _decode(decoder: json.JSONDecoder, raw: bytes | str) -> Any:
    try:
        if not isinstance(raw, str):
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads does
        return decoder.decode(raw)
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


def storable_json(value: Any) -> bool:
    """True when a decoded JSON document can be stored as text/jsonb on both databases: no NUL, no lone
    surrogate (`"\\ud800"`), no non-finite number (`1e400` decodes to inf; Python accepts `NaN`)."""
    return _walk(value, allow_nul=False)


def encodable_json(value: Any) -> bool:
    """True when a decoded JSON document can be written back as UTF-8 JSON: no lone surrogate, no
    non-finite number. NUL is fine on the wire (the activity log scrubs it before storing)."""
    return _walk(value, allow_nul=True)


def _walk(value: Any, *, allow_nul: bool) -> bool:
    try:
        return _ok(value, allow_nul)
    except RecursionError:  # nesting as deep as the parser allowed, walked from a deeper stack
        return False


def _ok(value: Any, allow_nul: bool) -> bool:
    if isinstance(value, str):
        if not allow_nul and "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_ok(k, allow_nul) and _ok(v, allow_nul) for k, v in value.items())
    if isinstance(value, list):
        return all(_ok(v, allow_nul) for v in value)
    return True
