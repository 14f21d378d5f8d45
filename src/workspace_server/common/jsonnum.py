"""JSON numbers and parsing as the Go reference produces and accepts them.

Go marshals a float64 with the shortest representation, so a whole value prints as `0`/`1`/`100`, never
`1.0` as Python does; clients that compare bodies byte-for-byte (and our wire tests) see the difference.
Go's decoder also rejects the `NaN`/`Infinity` literals Python's `json` accepts by default.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import orjson

log = logging.getLogger(__name__)

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


# How deep a request body may nest (objects and arrays). Go's decoder stops at 10000; Python's parser, and
# every recursive walk after it (validation, re-encoding, jsonb), at about the interpreter's recursion
# limit. 128 is far past any document the API takes (a 32-level bundle tree is ~70 levels).
MAX_JSON_DEPTH = 128


class UnsafeJSON(ValueError):
    """Well-formed JSON the server cannot keep: a lone surrogate, NUL (where it is stored), a number
    beyond float range, or nesting past MAX_JSON_DEPTH. Routes that ignore a malformed body still refuse
    these (the body was meant, it just cannot be stored or forwarded intact)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # `1e400`: Go refuses it as out of range; re-encoded it is not JSON
        raise UnsafeJSON(f"number {text} out of range")
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


# First bytes that start no byte-order mark (UTF-8 EF, UTF-16/32 FE FF / FF FE / 00 00 FE FF).
_NO_BOM = frozenset(range(1, 256)) - {0xEF, 0xFE, 0xFF}


def _encoding(raw: bytes) -> str:
    """`json.detect_encoding`, without its checks when the answer is plainly UTF-8: no BOM and no NUL in
    the first two bytes (the only way it could answer UTF-16/32), as for every JSON body in practice."""
    if len(raw) >= 2 and raw[0] in _NO_BOM and raw[1]:
        return "utf-8"
    return json.detect_encoding(raw)


def _decode(decoder: json.JSONDecoder, raw: bytes | str) -> Any:
    try:
        if not isinstance(raw, str):
            raw = raw.decode(_encoding(raw), "surrogatepass")  # as json.loads does
        return decoder.decode(raw)
    except RecursionError:
        raise UnsafeJSON("JSON nested too deeply") from None


# orjson reads an integer past 64 bits as a float: a document with a run of 19 digits is left to `json`.
# Found as a run of 19 zeros once each digit reads as one and every other byte as a space: two C passes,
# a twentieth of what the regex `[0-9]{19}` cost (it tries a match at every byte).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19
_MISS = object()


def _has_long_number(raw: bytes) -> bool:
    return _LONG_RUN in raw.translate(_DIGITS_AS_ZERO)


def _fast_loads(raw: bytes) -> Any:
    """orjson's parse where it gives what `loads_strict` would (it refuses NaN, Infinity and numbers past
    float range as well); _MISS where it might not, or refused the bytes: `json` then decides, errors
    included, so nothing but the cost changes."""
    if _has_long_number(raw):
        return _MISS
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _MISS


def loads_reply(body: bytes) -> Any:
    """A document someone else sent (an agent's reply), read as `json.loads` reads it: NaN and lone
    surrogates included, through orjson when that gives the same. ValueError when it is not JSON."""
    value = _fast_loads(body)
    return json.loads(body) if value is _MISS else value


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps_compact(value: Any) -> bytes:
    """Compact UTF-8 JSON of plain data, as `json.dumps(separators=(",", ":"), ensure_ascii=False)` writes
    it (floats may take another shortest form: `1e20` for `1e+20`). orjson, ~15x faster; `json` for what
    it refuses (integers past 64 bits, lone surrogates, which then raise UnicodeEncodeError as before)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _COMPACT(value).encode()


def decode_document(
    raw: bytes, *, allow_nul: bool = False, check_strings: bool = True, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """A request body as the API accepts it: `loads_finite`, then no lone surrogate (nor NUL unless
    `allow_nul`) and no nesting past `max_depth`. ValueError for malformed JSON, its subclass UnsafeJSON
    for well-formed JSON that cannot be kept. `check_strings=False`: the caller judges strings itself,
    item by item (a batch import counts such an entry as one error).

    Both walks are skipped when the bytes cannot need them, so a common body costs one C-level parse and a
    few byte scans: a surrogate or NUL needs a `\\u` escape (or the raw 0xED bytes of an encoded
    surrogate), and a document cannot nest deeper than its count of `[` and `{`.
    """
    data = _fast_loads(raw)
    if data is _MISS:
        data = loads_finite(raw)
    strings = check_strings and (b"\\u" in raw or b"\xed" in raw)
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    if (strings or deep) and not _keepable(data, allow_nul, max_depth if deep else None, strings):
        raise UnsafeJSON("JSON document cannot be stored")
    return data


def _keepable(value: Any, allow_nul: bool, max_depth: int | None, strings: bool) -> bool:
    """Iterative (a deep document must not recurse here): depth, strings and keys, non-finite floats."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if max_depth is not None and depth >= max_depth:
                return False
            for key, child in item.items():
                if strings and not _string_ok(key, allow_nul):
                    return False
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if max_depth is not None and depth >= max_depth:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if strings and not _string_ok(item, allow_nul):
                return False
        elif isinstance(item, float) and not math.isfinite(item):
            return False
    return True


def _string_ok(value: str, allow_nul: bool) -> bool:
    if not allow_nul and "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- reading stored documents back ----

# An escaped UTF-16 surrogate in stored JSON text (a valid pair decodes to one character; a lone one
# does not), and the constants Python's encoder writes for non-finite floats.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:  # past Python's int-string limit (4300 digits): jsonb keeps `1e5000` as numeric
        return None


_STORED = json.JSONDecoder(parse_constant=lambda _name: None, parse_float=_finite_or_none)
_STORED_HUGE = json.JSONDecoder(
    parse_constant=lambda _name: None, parse_float=_finite_or_none, parse_int=_int_or_none
)


def loads_stored(text: str | bytes) -> Any:
    """The JSON columns' reader (db/engine.py): a stored document, repaired so it can be sent again.

    Before bodies were checked in one place some rows were stored that no response can carry: a lone
    surrogate (SQLite keeps `"\\ud800"` as text), `NaN`/`Infinity` (SQLite), numbers beyond float or int
    range (`1e400`, or `1e5000` which jsonb keeps as numeric). Read back, each made the route a 500. They
    are repaired as JavaScript's `JSON.stringify` and Go's decoder would: non-finite numbers become
    `null`, a lone surrogate U+FFFD. A document that is not JSON at all reads as `null` (logged).
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "surrogatepass")
    try:
        try:
            value = _STORED.decode(text)
        except ValueError:
            value = _STORED_HUGE.decode(text)
        return _repair_strings(value) if _SURROGATE_ESCAPE.search(text) else value
    except (ValueError, RecursionError):
        log.warning("a stored JSON document could not be read; it reads as null")
        return None


def _fix(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return s


def _repair_strings(value: Any) -> Any:
    """A copy with every lone surrogate (in strings and keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return _fix(value)
    if isinstance(value, dict):
        return {_fix(k): _repair_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repair_strings(v) for v in value]
    return value


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
        return _string_ok(value, allow_nul)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_ok(k, allow_nul) and _ok(v, allow_nul) for k, v in value.items())
    if isinstance(value, list):
        return all(_ok(v, allow_nul) for v in value)
    return True
