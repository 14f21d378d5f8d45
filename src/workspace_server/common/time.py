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
    ts = ts.astimezone(UTC)
    base = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        base += "." + f"{ts.microsecond:06d}".rstrip("0")
    return base + "Z"
