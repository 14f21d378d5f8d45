"""Cron rules of schedules (spec 05 §6): the reference's grammar, zones, fire times across clock changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workspace_server.schedules import cron

NOW = datetime(2026, 11, 29, 14, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("*/5 * * * *", datetime(2026, 11, 29, 14, 10, tzinfo=UTC)),
        ("5/15 * * * *", datetime(2026, 11, 29, 14, 20, tzinfo=UTC)),  # robfig: N/step = N-max/step
        ("0 9 * * MON-FRI", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),  # the 29th is a Sunday
        ("0 9 * * mon", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
        ("0 0 ? * *", datetime(2026, 11, 30, 0, 0, tzinfo=UTC)),
        ("0 0 1 jan,Feb ?", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
        ("7 14 * * *", datetime(2026, 11, 30, 14, 7, tzinfo=UTC)),  # strictly after now
        ("0-10/5 14 29 11 0", datetime(2026, 11, 29, 14, 10, tzinfo=UTC)),
    ],
)
def test_accepted_rules_and_their_next_slot(expr: str, expected: datetime) -> None:
    assert cron.next_fire(expr, "UTC", NOW) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "* * * *",
        "* * * * * *",  # seconds
        "@hourly",
        "0 9 * * 7",  # robfig's day of week is 0-6
        "0 0 L * *",
        "0 0 * * 5#2",
        "0 0 15W * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "*/0 * * * *",
        "5-1 * * * *",
        "* * * JANUARY *",
        "* * * * MON,",
        "TZ=UTC 0 9 * * *",
    ],
)
def test_refused_rules(expr: str) -> None:
    with pytest.raises(cron.CronError):
        cron.validate(expr)


def test_zones() -> None:
    assert str(cron.zone("")) == "UTC"
    assert cron.next_fire("0 9 * * *", "Asia/Tokyo", NOW) == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    for bad in ("Mars/Base", "../../etc/passwd", "/etc/localtime", "UTC\x00"):
        with pytest.raises(ValueError):
            cron.zone(bad)


def test_clock_changes() -> None:
    ny = "America/New_York"
    # 2027-03-14 02:30 does not exist in New York: the slot moves to the first instant after the gap
    spring = cron.next_fire("30 2 * * *", ny, datetime(2027, 3, 13, 12, tzinfo=UTC))
    assert spring == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    # 2027-11-07 01:30 happens twice: it fires once
    first = cron.next_fire("30 1 * * *", ny, datetime(2027, 11, 7, 4, tzinfo=UTC))
    assert first == datetime(2027, 11, 7, 5, 30, tzinfo=UTC)
    assert cron.next_fire("30 1 * * *", ny, first) == datetime(2027, 11, 8, 6, 30, tzinfo=UTC)


def test_health_gaps() -> None:
    # spec 05 §11: thresholds are twice these
    assert cron.gap_seconds("*/5 * * * *", "UTC", NOW) == 300
    assert cron.gap_seconds("0 * * * *", "UTC", NOW) == 3600
    assert cron.gap_seconds("0 9 * * *", "UTC", NOW) == 86400
