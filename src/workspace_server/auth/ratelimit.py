"""Fixed-window rate limiting (spec 03 §4), shared by the global per-IP limiter, the org-token mint
limiter (10/hour/IP) and the MCP limiter (120/min/bearer).

A bucket holds `limit` tokens and refills completely once `window_seconds` have passed since its window
began. State lives in this process only: with N replicas behind a load balancer a client effectively gets
N×limit, which is the reference's semantics too (its limiter is an in-memory map).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

IDLE_PURGE_SECONDS = 600.0  # reference: buckets idle > 10 min are dropped
DEFAULT_MAX_KEYS = 100_000  # memory bound when many source addresses (IPv6) are in play


class Decision(NamedTuple):
    """(A named tuple: one is made for every request the global limiter sees.)"""

    allowed: bool
    limit: int
    remaining: int  # tokens left after this request, floor 0
    reset_seconds: int  # whole seconds (rounded up) until the window refills
    retry_after: int  # seconds to wait when not allowed; 0 when allowed

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* on every response, plus Retry-After on a refusal."""
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as an ASGI response carries them: lower-case names, latin-1 bytes."""
        out = [
            (b"x-ratelimit-limit", _ascii(self.limit)),
            (b"x-ratelimit-remaining", _ascii(self.remaining)),
            (b"x-ratelimit-reset", _ascii(self.reset_seconds)),
        ]
        if not self.allowed:
            out.append((b"retry-after", _ascii(self.retry_after)))
        return out

    def error_body(self, message: str = "rate limit exceeded") -> dict[str, Any]:
        return {"error": message, "retry_after": self.retry_after}


def _ascii(n: int) -> bytes:
    return b"%d" % n


@dataclass
class _Bucket:
    tokens: int
    window_start: float


class FixedWindowLimiter:
    """`hit(key)` spends one token of `key`'s bucket and says whether the request may proceed."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if limit <= 0 or window_seconds <= 0:
            raise ValueError("limit and window_seconds must be positive")
        self.limit = limit
        self.window = float(window_seconds)
        self._clock = clock
        self._max_keys = max_keys
        # Ordered by window start (a refilled bucket moves to the end), so purging only looks at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str) -> Decision:
        with self._lock:
            now = self._clock()
            self._purge(now)
            bucket = self._buckets.get(key)
            if bucket is None or now - bucket.window_start >= self.window:
                bucket = _Bucket(self.limit, now)
                self._buckets[key] = bucket
                self._buckets.move_to_end(key)
            # window minus elapsed, not (start + window) - now: that sum rounds, and a fresh window then
            # advertised window + 1 seconds (61 of 60)
            reset = max(0, math.ceil(self.window - (now - bucket.window_start)))
            if bucket.tokens <= 0:
                # Never advertise 0: a client honouring Retry-After must not retry in a tight loop.
                wait = max(1, reset)
                return Decision(False, self.limit, 0, wait, wait)
            bucket.tokens -= 1
            return Decision(True, self.limit, bucket.tokens, reset, 0)

    def _purge(self, now: float) -> None:
        # A bucket is dropped only once its window is over AND it has been idle 10 min. The reference purges
        # on idle alone, which would reset a 1-hour window (the mint limiter) after 10 minutes.
        cutoff = now - max(IDLE_PURGE_SECONDS, self.window)
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if bucket.window_start > cutoff and len(self._buckets) <= self._max_keys:
                break
            del self._buckets[key]
