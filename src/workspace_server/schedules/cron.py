"""Cron expressions and time zones of schedules (spec 05 §6).

The reference parses with robfig/cron v3's standard parser: five fields (minute, hour, day of month,
month, day of week) of lists, ranges, steps, `*`, `?` and English month/day names; no seconds, no
`@descriptors`. croniter computes the fire times but accepts more than that (a sixth field, `@hourly`,
`L`, `#`, `W`, day 7), so each field is checked against robfig's grammar and bounds first: an expression
the reference would refuse is refused here too, rather than stored and fired on different rules.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# (low, high, names mapped to low + index) per field, in order
_FIELDS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, MONTHS),
    (0, 6, DAYS),
)
_TERM = re.compile(r"(?P<range>\*|\?|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>[0-9]+))?")


class CronError(ValueError):
    """Not a five-field expression the reference's parser accepts."""


def _value(token: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if token.isdigit():
        n = int(token)
    elif token.lower() in names:
        n = low + names.index(token.lower())
    else:
        raise CronError(f"bad value {token!r}")
    if not low <= n <= high:
        raise CronError(f"{n} out of range [{low}, {high}]")
    return n


def _check_field(field: str, low: int, high: int, names: tuple[str, ...]) -> None:
    for term in field.split(","):
        m = _TERM.fullmatch(term)
        if m is None:
            raise CronError(f"bad term {term!r}")
        step = m.group("step")
        if step is not None and int(step) == 0:
            raise CronError("step must be positive")
        span = m.group("range")
        if span in ("*", "?"):
            continue
        ends = [_value(t, low, high, names) for t in span.split("-")]
        if ends[0] > ends[-1]:
            raise CronError(f"range {span!r} runs backwards")


def validate(expr: str) -> str:
    """The expression with `?` read as `*` (croniter's form); CronError when the reference refuses it."""
    fields = expr.split()
    if len(fields) != len(_FIELDS):
        raise CronError(f"expected 5 fields, found {len(fields)}")
    for field, (low, high, names) in zip(fields, _FIELDS, strict=True):
        _check_field(field, low, high, names)
    return " ".join(f.replace("?", "*") for f in fields)


def zone(name: str) -> ZoneInfo:
    """An IANA zone; "" is UTC. ValueError for anything else zoneinfo does not know."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as e:  # ValueError: absolute paths, "..", NUL
        raise ValueError(name) from e


def next_fire(expr: str, tz: str, after: datetime) -> datetime:
    """The first slot strictly after `after`, in the schedule's zone, returned in UTC.

    Each local wall-clock slot fires once: when the clocks go back, the repeated hour's slots (which
    croniter yields a second time) are skipped, so a daily 01:30 job does not run twice that night.
    """
    where = zone(tz)
    it = croniter(validate(expr), after.astimezone(where))
    while True:
        fire: datetime = it.get_next(datetime)
        local = fire.astimezone(where)
        if not _repeated_wall_time(local):
            return fire.astimezone(UTC)


def _repeated_wall_time(local: datetime) -> bool:
    """The second occurrence of an ambiguous local time (fold=1 at a backward clock change)."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def gap_seconds(expr: str, tz: str, after: datetime) -> float:
    """Seconds between the next two slots after `after` (the health check's stale threshold is twice it)."""
    first = next_fire(expr, tz, after)
    return (next_fire(expr, tz, first) - first).total_seconds()
