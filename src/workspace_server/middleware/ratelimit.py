"""The per-IP rate limit (spec 03 §4); the limiter itself is `auth.ratelimit`."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.auth.ratelimit import FixedWindowLimiter
from workspace_server.middleware.asgi import (
    JSON_TYPE,
    Refusal,
    Verdict,
    client_ip,
    enact,
    json_body,
)

RATE_WINDOW_SECONDS = 60.0


class RateLimitMiddleware:
    """Per-IP fixed window (spec 03 §4). Dev mode skips it and says `X-RateLimit-Limit: unlimited`."""

    def __init__(self, app: ASGIApp, limiter: FixedWindowLimiter, dev_mode: bool) -> None:
        self.app = app
        self.limiter = limiter
        self.dev_mode = dev_mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # The headers go on HTTP responses only: a WebSocket's 101 is written by the server (the
        # reference's has none either).
        await enact(self.admit(scope), self.app, scope, receive, send)

    def admit(self, scope: Scope) -> Verdict:
        if self.dev_mode:
            return _UNLIMITED
        decision = self.limiter.hit(client_ip(scope))
        headers = decision.raw_headers()
        if not decision.allowed:
            return Refusal(429, json_body(decision.error_body()), [*headers, JSON_TYPE])
        return headers


_UNLIMITED = [(b"x-ratelimit-limit", b"unlimited")]
