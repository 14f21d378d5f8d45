"""Refuses a URL no route can use (a NUL) before routing (issue 11 §3)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.middleware.asgi import JSON_TYPE, Refusal, Verdict, enact, json_body

INVALID_URL = "invalid URL"


class UrlGuardMiddleware:
    """A NUL in the path or the query (`%00`) is 400 before any route sees it: Postgres text cannot hold it,
    so every route that looked a path or query value up answered a 500, and no real URL carries one. (Other
    bytes need no guard: the server decodes invalid UTF-8, a `%ED%A0%80` surrogate included, to U+FFFD.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def admit(self, scope: Scope) -> Verdict:
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            return _REFUSAL
        return []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            await enact(self.admit(scope), self.app, scope, receive, send)
            return
        await self.app(scope, receive, send)


_REFUSAL = Refusal(400, json_body({"error": INVALID_URL}), [JSON_TYPE])
