"""Timestamps: always timezone-aware UTC, rendered as RFC 3339."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone


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


# Strict RFC 3339, as Go's `time.Parse(time.RFC3339, s)` accepts it. `fromisoformat` is far more lenient
# (dates alone, a space for `T`, `+0200`, week dates), so a value the reference refuses with a 400 would
# be taken here. Accepted: `YYYY-MM-DDTHH:MM:SS`, an optional `.fraction` of any length (kept to the
# microsecond), then `Z` or `±HH:MM`.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:Z|([+-])(\d{2}):(\d{2}))", re.ASCII
)


def _zone(sign: str | None, hours: str | None, minutes: str | None) -> timezone | None:
    if sign is None or hours is None or minutes is None:
        return UTC
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        return None
    offset = timedelta(hours=h, minutes=m)
    return timezone(-offset if sign == "-" else offset)


def parse_rfc3339(text: str) -> datetime | None:
    """The instant in UTC, or None when `text` is not strict RFC 3339 (or out of range)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, oh, om = match.groups()
    zone = _zone(sign, oh, om)
    if zone is None:
        return None
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=zone
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
