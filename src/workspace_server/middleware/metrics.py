"""The request counter and the access log: one recorder for every request, refused ones included."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.common.routing import HotRoute
from workspace_server.middleware.route_labels import RouteTemplates
from workspace_server.observability.metrics import HttpMetrics

access_log = logging.getLogger("workspace_server.access")


def _log_access(scope: Scope, status: int, elapsed: float) -> None:
    """uvicorn's access line (client, request line, status) plus the duration."""
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string")
    target = (path + b"?" + query if query else path).decode("latin-1")
    access_log.info(
        '%s - "%s %s HTTP/%s" %d %.1fms',
        peer,
        scope["method"],
        target,
        scope.get("http_version", "1.1"),
        status,
        elapsed * 1000,
    )


class MetricsMiddleware:
    """Counts every request by route template and writes the access log line (uvicorn's is off)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, access: str = "on") -> None:
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates()
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            self.record(scope, status, start)

    def record(self, scope: Scope, status: int, start: float) -> None:
        """Count an HTTP request that began at `start` (perf_counter) and log its access line."""
        elapsed = time.perf_counter() - start
        self.metrics.observe(scope["method"], self.templates.label(scope), status, elapsed)
        if self._logs(scope, status):
            _log_access(scope, status, elapsed)

    def _logs(self, scope: Scope, status: int) -> bool:
        if self.access == "all":
            return True
        if self.access == "off":
            return False
        return status >= 400 or not isinstance(scope.get("route"), HotRoute)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Counted once, at the end of the handshake: a WebSocket's lifetime is not a request duration.
        start = time.perf_counter()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.metrics.observe("GET", self.templates.label(scope), status, time.perf_counter() - start)

        async def wrapped(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                record(101)
            elif kind == "websocket.http.response.start":
                record(message["status"])
            elif kind == "websocket.close":
                record(403)  # a close before accept is answered with 403
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            record(500)
