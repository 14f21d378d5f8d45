"""Workspace ids are lowercase UUID strings."""

from __future__ import annotations

import os
import re
import uuid

# The canonical form itself: `str(uuid.UUID(raw))` is `raw` for these, so the parse can be skipped.
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


# the version (4) and variant (RFC 4122) bits of a random UUID
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)
_BATCH = 64  # ids drawn from one read of the OS's random source

_ready: list[int] = []  # random 128-bit values not handed out yet; list.pop is atomic, so threads can share


def _refill() -> None:
    data = os.urandom(16 * _BATCH)
    _ready.extend(int.from_bytes(data[i : i + 16]) for i in range(0, len(data), 16))


os.register_at_fork(after_in_child=_ready.clear)  # a child must not hand out its parent's next ids


def new_id() -> str:
    """A random (version 4) UUID, lowercase: what `str(uuid.uuid4())` gives, from the same source
    (`os.urandom`), read 64 ids at a time: an id is made for every activity row and proxied message, and
    a read of the random source per id cost more than the rest of making it."""
    try:
        value = _ready.pop()
    except IndexError:
        _refill()
        return new_id()
    h = "%032x" % (value & _V4_CLEAR | _V4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_uuid(raw: str) -> str | None:
    """Canonical lowercase form of a UUID string, or None when it is not one.

    Only the canonical 36-char hyphenated form is accepted; that rejects every case upstream tests pin
    (`not-a-uuid`, `ws-123`, traversal strings, truncated UUIDs) and admits the nil UUID.
    """
    if len(raw) != 36:
        return None
    if _CANONICAL.fullmatch(raw) is not None:  # what agents send: a tenth of the cost of the parse below
        return raw
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def uuid_or_raw(raw: str) -> str:
    """A path id in canonical (lowercase) UUID form; anything else is kept and simply matches no row.

    The reference hands a malformed id to Postgres and answers 500; here it is an id no row has: a list is
    empty, a lookup is a 404, an insert fails its foreign key as for any unknown id (activity reports still
    answer 200, as the reference).
    """
    return parse_uuid(raw) or raw
