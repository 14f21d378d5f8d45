"""Workspace ids are lowercase UUID strings."""

from __future__ import annotations

import uuid


def new_id() -> str:
    return str(uuid.uuid4())


def parse_uuid(raw: str) -> str | None:
    """Canonical lowercase form of a UUID string, or None when it is not one.

    Only the canonical 36-char hyphenated form is accepted, as Go's uuid.Parse on these routes effectively does
    for the cases upstream tests pin (`not-a-uuid`, `ws-123`, traversal, truncated UUIDs).
    """
    if len(raw) != 36:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None
