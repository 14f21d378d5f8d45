"""gin's trailing-slash redirect in place of Starlette's."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.middleware.asgi import Headers


class TrailingSlashRedirectMiddleware:
    """gin's RedirectTrailingSlash: 301 for GET, 307 otherwise, to a relative Location.

    Starlette's router answers every method with 307 and an absolute URL built from the request's scheme,
    which behind a TLS-terminating proxy would point the client at http://. Only the router's own redirect
    is rewritten: it is the one 307 produced without a matched route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 307 and "route" not in scope:
                message = self._rewrite(scope, message)
            await send(message)

        await self.app(scope, receive, wrapped)

    @staticmethod
    def _rewrite(scope: Scope, message: Message) -> Message:
        status = 301 if scope["method"] == "GET" else 307
        headers: Headers = []
        for key, value in message.get("headers", ()):
            if key == b"location":
                value = _relative_location(scope)
            headers.append((key, value))
        return {**message, "status": status, "headers": headers}


def _relative_location(scope: Scope) -> bytes:
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    target = raw.rstrip(b"/") if raw.endswith(b"/") else raw + b"/"
    # One leading slash only: `//host` would be a protocol-relative redirect to another site.
    target = b"/" + target.lstrip(b"/")
    query: bytes = scope.get("query_string", b"")
    return target + (b"?" + query if query else b"")
