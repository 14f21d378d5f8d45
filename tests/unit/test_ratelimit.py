"""FixedWindowLimiter: the reference's fixed-window semantics, driven by a fake clock."""

from __future__ import annotations

import pytest

from workspace_server.auth.ratelimit import FixedWindowLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_limit_then_refuses_with_retry_after() -> None:
    clock = Clock()
    lim = FixedWindowLimiter(3, 60, clock=clock)
    remaining = [lim.hit("ip").remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    clock.now += 10.5
    d = lim.hit("ip")
    assert not d.allowed
    assert d.remaining == 0
    assert d.retry_after == 50  # 49.5 s left, rounded up
    assert d.reset_seconds == 50
    assert d.headers() == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "50",
        "Retry-After": "50",
    }
    assert d.error_body() == {"error": "rate limit exceeded", "retry_after": 50}


def test_allowed_decision_has_no_retry_after_header() -> None:
    d = FixedWindowLimiter(5, 60, clock=Clock()).hit("k")
    assert d.allowed
    assert d.headers() == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "60"}


def test_window_refills_fully_once_elapsed() -> None:
    clock = Clock()
    lim = FixedWindowLimiter(2, 60, clock=clock)
    lim.hit("a")
    lim.hit("a")
    assert not lim.hit("a").allowed
    clock.now += 60
    d = lim.hit("a")
    assert d.allowed and d.remaining == 1 and d.reset_seconds == 60


def test_keys_have_separate_buckets() -> None:
    lim = FixedWindowLimiter(1, 60, clock=Clock())
    assert lim.hit("a").allowed
    assert not lim.hit("a").allowed
    assert lim.hit("b").allowed


def test_retry_after_is_never_zero() -> None:
    clock = Clock()
    lim = FixedWindowLimiter(1, 60, clock=clock)
    lim.hit("a")
    clock.now += 59.9999
    d = lim.hit("a")
    assert not d.allowed and d.retry_after == 1


def test_idle_buckets_are_purged_after_ten_minutes() -> None:
    clock = Clock()
    lim = FixedWindowLimiter(5, 60, clock=clock)
    lim.hit("old")
    clock.now += 300
    lim.hit("recent")
    assert len(lim) == 2
    clock.now += 301  # "old" idle for 601 s, "recent" for 301 s
    lim.hit("recent")
    assert len(lim) == 1


def test_long_window_is_not_reset_by_the_idle_purge() -> None:
    # The mint limiter is 10/hour: a 10-minute idle purge must not hand out a fresh window early.
    clock = Clock()
    lim = FixedWindowLimiter(1, 3600, clock=clock)
    assert lim.hit("ip").allowed
    clock.now += 1200
    lim.hit("someone-else")
    d = lim.hit("ip")
    assert not d.allowed
    assert d.retry_after == 2400


def test_key_count_is_bounded() -> None:
    lim = FixedWindowLimiter(1, 60, clock=Clock(), max_keys=100)
    for i in range(1000):
        lim.hit(f"ip{i}")
    assert len(lim) <= 101


def test_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError):
        FixedWindowLimiter(0, 60)
    with pytest.raises(ValueError):
        FixedWindowLimiter(1, 0)
