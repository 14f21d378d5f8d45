"""Timestamps: always timezone-aware UTC, rendered as RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(ts: datetime | None) -> str | None:
    """RFC 3339 with a `Z` suffix, as Go's time.Time marshals (nanosecond trailing zeros trimmed)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    elif ts.utcoffset():
        ts = ts.astimezone(UTC)
    text = ts.replace(tzinfo=None).isoformat()  # "…THH:MM:SS[.ffffff]", a quarter of strftime's cost
    return (text.rstrip("0") if ts.microsecond else text) + "Z"
