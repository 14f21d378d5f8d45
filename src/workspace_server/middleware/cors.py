"""CORS with gin-contrib/cors semantics (spec 06 §6)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.config import DEFAULT_CORS_ORIGINS, Settings
from workspace_server.middleware.asgi import Headers, Refusal, Verdict, enact, header

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorsConfig:
    allow_all: bool
    origins: frozenset[str]


def cors_config(settings: Settings) -> CorsConfig:
    """CORS_ORIGINS, comma-separated, entries trimmed (spec 06 §6 BUG: a space after a comma panicked).

    DECIDE: an entry that neither starts with http:// or https:// nor contains `*` is logged and ignored
    (the reference panics at boot). If every entry is invalid no cross-origin caller is allowed.
    """
    entries = [e.strip() for e in settings.CORS_ORIGINS.split(",") if e.strip()]
    if not entries:
        entries = list(DEFAULT_CORS_ORIGINS)
    valid: set[str] = set()
    for entry in entries:
        if entry.startswith(("http://", "https://")) or "*" in entry:
            valid.add(entry.lower())
        else:
            log.warning("CORS_ORIGINS entry %r ignored: must start with http:// or https://", entry)
    return CorsConfig(allow_all="*" in valid, origins=frozenset(valid))


_ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,OPTIONS"
_ALLOW_HEADERS = "Origin,Content-Type,X-Workspace-Id,Authorization"


class CORSMiddleware:
    """gin-contrib/cors semantics: same-origin and Origin-less requests pass untouched; a foreign origin
    not allowed gets an empty 403; an allowed OPTIONS is a 204 preflight answered here."""

    def __init__(self, app: ASGIApp, config: CorsConfig) -> None:
        self.app = app
        self.config = config

    def _allowed(self, origin: str) -> bool:
        return self.config.allow_all or origin in self.config.origins

    def _origin_headers(self, origin: str) -> Headers:
        return [(b"access-control-allow-origin", b"*" if self.config.allow_all else origin.encode("latin-1"))]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await enact(self.admit(scope), self.app, scope, receive, send)

    def admit(self, scope: Scope) -> Verdict:
        origin = header(scope, b"origin")
        if not origin:
            return []
        host = header(scope, b"host")
        if origin in (f"http://{host}", f"https://{host}"):
            return []
        if not self._allowed(origin):
            return _FORBIDDEN
        if scope["type"] == "websocket":
            return []
        if scope["method"] == "OPTIONS":
            return Refusal(204, headers=self._preflight_headers(origin))
        return self._normal_headers(origin)

    def _preflight_headers(self, origin: str) -> Headers:
        headers: Headers = [
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", _ALLOW_METHODS.encode()),
            (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
        ]
        if not self.config.allow_all:
            headers += [
                (b"vary", b"Origin"),
                (b"vary", b"Access-Control-Request-Method"),
                (b"vary", b"Access-Control-Request-Headers"),
            ]
        return headers + self._origin_headers(origin)

    def _normal_headers(self, origin: str) -> Headers:
        headers: Headers = [(b"access-control-allow-credentials", b"true")]
        if not self.config.allow_all:
            headers.append((b"vary", b"Origin"))
        return headers + self._origin_headers(origin)


_FORBIDDEN = Refusal(403)
