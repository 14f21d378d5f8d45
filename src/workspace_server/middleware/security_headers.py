"""The security headers every HTTP response carries, with a stricter CSP for the API than for the UI."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.middleware.asgi import Headers, Verdict, enact

_API_PREFIXES = (
    "/workspaces",
    "/registry",
    "/health",
    "/admin",
    "/metrics",
    "/settings",
    "/bundles",
    "/org",
    "/orgs",
    "/templates",
    "/plugins",
    "/webhooks",
    "/channels",
    "/ws",
    "/events",
    "/approvals",
)
API_CSP = "default-src 'self'"
UI_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self' ws: wss:; font-src 'self' data:"
)
_BASE_SECURITY_HEADERS: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
_API_HEADERS = [*_BASE_SECURITY_HEADERS, (b"content-security-policy", API_CSP.encode())]
_UI_HEADERS = [*_BASE_SECURITY_HEADERS, (b"content-security-policy", UI_CSP.encode())]


_API_SUBPATHS = tuple(p + "/" for p in _API_PREFIXES)


def is_api_path(path: str) -> bool:
    return path.startswith(_API_SUBPATHS) or path in _API_PREFIXES


class SecurityHeadersMiddleware:
    """Set on every HTTP response (404s included); a handler's own value for a header wins."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await enact(self.admit(scope), self.app, scope, receive, send)

    def admit(self, scope: Scope) -> Verdict:
        return _API_HEADERS if is_api_path(scope["path"]) else _UI_HEADERS
