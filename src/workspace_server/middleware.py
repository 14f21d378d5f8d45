"""Global middleware (spec 06 §1.1, spec 03 §4), written as plain ASGI so streaming responses (SSE) and
WebSockets pass through untouched.

Stack, outermost first:

    hot lane → metrics → CORS → per-IP rate limit → TenantGuard → security headers → body limit
             → slash redirect → app

The hot lane (common/routing.py) sends the agents' hot routes through a second copy of the same stack
(sharing the rate limiter and the metrics) straight to their endpoints.

The reference orders CORS → rate limit → metrics; here the metrics recorder sits outside the other two so
that the requests they refuse (CORS 403, 429) are counted as well. It changes no header, so what a client
sees is the reference's order: 429s and TenantGuard 404s carry no security headers, CORS refusals carry no
rate-limit headers.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.routing import Mount, WebSocketRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.auth.deps import is_same_origin_canvas
from workspace_server.auth.ratelimit import FixedWindowLimiter
from workspace_server.common.routing import HotEndpoint, HotLane, HotRoute
from workspace_server.config import DEFAULT_CORS_ORIGINS, Settings
from workspace_server.observability.metrics import UNMATCHED, HttpMetrics, build_registry, route_template

log = logging.getLogger(__name__)
access_log = logging.getLogger("workspace_server.access")

Headers = list[tuple[bytes, bytes]]

# Set in the scope by a middleware that answers without reaching the router, so the metrics recorder knows
# to resolve the route template itself (the reference's gin has routed before any middleware runs).
ABORTED = "workspace_server.aborted"

RATE_WINDOW_SECONDS = 60.0
JSON_TYPE = (b"content-type", b"application/json; charset=utf-8")


# ---------------------------------------------------------------- small ASGI helpers


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def client_ip(scope: Scope) -> str:
    """The TCP peer; X-Forwarded-For is never consulted (spec 03 §4, #179)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def _encode(headers: dict[str, str]) -> Headers:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _with_defaults(message: Message, defaults: Headers) -> Message:
    """Add `defaults` to a response start, except names the handler already set (handlers may override)."""
    headers = list(message.get("headers", ()))
    present = {bytes(k).lower() for k, _ in headers}
    headers.extend((k, v) for k, v in defaults if k not in present)
    return {**message, "headers": headers}


def _add_defaults(send: Send, start_type: str, defaults: Headers) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == start_type:
            message = _with_defaults(message, defaults)
        await send(message)

    return wrapped


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def send_response(send: Send, status: int, body: bytes = b"", headers: Headers | None = None) -> None:
    all_headers = [*(headers or []), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def deny_websocket(
    scope: Scope, receive: Receive, send: Send, status: int, body: bytes = b"", headers: Headers | None = None
) -> None:
    """Refuse a WebSocket handshake with an HTTP status when the server supports it, else a plain 403."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        all_headers = [*(headers or []), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": status, "headers": all_headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, body: bytes = b"", headers: Headers | None = None
) -> None:
    scope[ABORTED] = True
    if scope["type"] == "websocket":
        await deny_websocket(scope, receive, send, status, body, headers)
    else:
        await send_response(send, status, body, headers)


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class _RouteEntry:
    route: Any
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: a WebSocket route or a mount
    websocket: bool
    template: str


def effective_routes(app: Any) -> Iterable[tuple[Any, str, Any]]:
    """(route, full path, methods) for every route, prefixes of included routers applied."""
    routes = getattr(getattr(app, "router", None), "routes", [])
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI releases that flatten included routers at include time
        return [(r, getattr(r, "path", ""), getattr(r, "methods", None)) for r in routes]
    return [(rc.original_route, rc.path or "", rc.methods) for rc in iter_route_contexts(routes)]


class RouteTemplates:
    """Maps a request to its route template in gin syntax (`/workspaces/:id`) for the `path` label.

    Built lazily from the app's routes: `scope["route"]` is the route object the router picked, but its own
    `path` lacks the prefix of an enclosing `include_router`, so the full path is looked up here.
    """

    def __init__(self) -> None:
        self._built = False
        self._entries: list[_RouteEntry] = []
        self._by_route: dict[int, list[_RouteEntry]] = {}
        self._foreign: set[int] = set()  # sub-app routes: not in the table, do not rebuild again
        # (id(route), method, websocket?) -> template, for routes with one table entry: the router already
        # matched the path, so the regex test is redundant and the label is a dict hit per request.
        self._memo: dict[tuple[int, str, bool], str] = {}

    def _build(self, app: Any) -> None:
        entries = []
        for route, path, methods in effective_routes(app):
            if isinstance(route, Mount):
                path = path.rstrip("/") + "/{path:path}"
            regex, _, _ = compile_path(path)
            websocket = isinstance(route, WebSocketRoute)
            allowed = frozenset(methods) if methods and not websocket else None
            entries.append(_RouteEntry(route, regex, allowed, websocket, route_template(path)))
        by_route: dict[int, list[_RouteEntry]] = {}
        for entry in entries:
            by_route.setdefault(id(entry.route), []).append(entry)
        self._entries, self._by_route, self._built = entries, by_route, True
        self._memo = {}

    def label(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None and not scope.get(ABORTED):
            return UNMATCHED  # the router found nothing (404, or its trailing-slash redirect)
        key = (id(route), scope.get("method", "GET"), scope["type"] == "websocket")
        if route is not None and (hit := self._memo.get(key)) is not None:
            return hit
        label = self._resolve(scope, route)
        if route is not None and label != UNMATCHED and len(self._by_route.get(id(route), ())) == 1:
            self._memo[key] = label
        return label

    def _resolve(self, scope: Scope, route: Any) -> str:
        if not self._built:
            self._build(scope.get("app"))
        if route is not None and id(route) not in self._by_route and id(route) not in self._foreign:
            self._build(scope.get("app"))  # a route added after the table was built
            if id(route) not in self._by_route:
                self._foreign.add(id(route))
        candidates = self._entries if route is None else self._by_route.get(id(route), [])
        path = _route_path(scope)
        for entry in candidates:
            if entry.websocket != (scope["type"] == "websocket") or not entry.regex.match(path):
                continue
            if entry.methods is not None and scope["method"] not in entry.methods:
                continue  # wrong method: the reference has no 405, it is an unmatched 404
            return entry.template
        return UNMATCHED


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


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


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


# ---------------------------------------------------------------- CORS


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
        origin = header(scope, b"origin")
        host = header(scope, b"host")
        if not origin or origin in (f"http://{host}", f"https://{host}"):
            await self.app(scope, receive, send)
            return
        if not self._allowed(origin):
            await refuse(scope, receive, send, 403)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
        elif scope["method"] == "OPTIONS":
            await refuse(scope, receive, send, 204, headers=self._preflight_headers(origin))
        else:
            extra = self._normal_headers(origin)
            await self.app(scope, receive, _add_defaults(send, "http.response.start", extra))

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


# ---------------------------------------------------------------- rate limit


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
        if self.dev_mode:
            unlimited = [(b"x-ratelimit-limit", b"unlimited")]
            await self.app(scope, receive, _add_defaults(send, "http.response.start", unlimited))
            return
        decision = self.limiter.hit(client_ip(scope))
        headers = _encode(decision.headers())
        if not decision.allowed:
            await refuse(scope, receive, send, 429, _json(decision.error_body()), [*headers, JSON_TYPE])
            return
        # HTTP responses only: a WebSocket's 101 is written by the server (the reference's has none either).
        await self.app(scope, receive, _add_defaults(send, "http.response.start", headers))


# ---------------------------------------------------------------- TenantGuard


TENANT_ALLOWLIST = frozenset({"/health", "/metrics", "/registry/register", "/registry/heartbeat"})


def org_from_replay_src(value: str) -> str:
    """The `state=` segment of Fly-Replay-Src (`k=v;k=v`, segments trimmed), or ""."""
    for segment in value.split(";"):
        segment = segment.strip()
        if segment.startswith("state="):
            return segment[len("state=") :]
    return ""


class TenantGuardMiddleware:
    """Active only when MOLECULE_ORG_ID is set: a request not addressed to this org gets an empty 404,
    so another org's machine cannot even be told apart from a missing route."""

    def __init__(self, app: ASGIApp, org_id: str) -> None:
        self.app = app
        self.org_id = org_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._passes(scope):
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, 404)

    def _passes(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in TENANT_ALLOWLIST or path.startswith("/cp/"):
            return True
        if header(scope, b"x-molecule-org-id") == self.org_id:
            return True
        if org_from_replay_src(header(scope, b"fly-replay-src")) == self.org_id:
            return True
        ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
        if ctx is None:
            return False
        # It reads headers only; Request() refuses a websocket scope, so hand it an http view.
        return is_same_origin_canvas(ctx, Request({**scope, "type": "http"}))


# ---------------------------------------------------------------- security headers


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


def is_api_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in _API_PREFIXES)


class SecurityHeadersMiddleware:
    """Set on every HTTP response (404s included); a handler's own value for a header wins."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        defaults = _API_HEADERS if is_api_path(scope["path"]) else _UI_HEADERS
        await self.app(scope, receive, _add_defaults(send, "http.response.start", defaults))


# ---------------------------------------------------------------- body size


BODY_TOO_LARGE = "request body too large"


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once a body passes the cap. An HTTPException, so FastAPI's body parsing lets it
    through (it turns other exceptions into 400) and the app's handler renders the 413 JSON."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=BODY_TOO_LARGE)


class NulInUrlMiddleware:
    """U+0000 in the path or the query string becomes U+FFFD before routing. No id, key or filter of this
    API can hold a NUL (writes refuse it), so either way the value names nothing; but Postgres cannot even
    compare text holding one, and such a value reached the database as a 500 (found by the schemathesis
    run, docs/decisions.md "OpenAPI and fuzzing"). Each route then answers as for any unknown id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            query: bytes = scope.get("query_string", b"")
            if "\x00" in path or b"%00" in query:
                scope = {
                    **scope,
                    "path": path.replace("\x00", "\ufffd"),
                    "query_string": query.replace(b"%00", b"%EF%BF%BD"),
                }
                if "path_params" in scope:  # the hot lane matched its route before this layer ran
                    scope["path_params"] = {
                        k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
                        for k, v in scope["path_params"].items()
                    }
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """No route buffers more than MAX_BODY_BYTES: a declared length over the cap is refused before the app
    runs; an undeclared (chunked) body is counted as it streams in."""

    # routes that stream larger bodies and enforce their own caps (chat uploads: 50 MiB, spec 04 §4)
    OWN_CAPS = re.compile(r"^/workspaces/[^/]+/chat/uploads$")

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.OWN_CAPS.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await send_response(send, 413, _json({"error": BODY_TOO_LARGE}), [JSON_TYPE])
            return
        started = False
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await send_response(send, 413, _json({"error": BODY_TOO_LARGE}), [JSON_TYPE])


# ---------------------------------------------------------------- trailing-slash redirect


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


# ---------------------------------------------------------------- wiring


def _ws_active(app: FastAPI) -> Callable[[], int]:
    def read() -> int:
        ctx = getattr(app.state, "ctx", None)
        return ctx.hub.client_count if ctx is not None else 0

    return read


def install_middleware(app: FastAPI, settings: Settings, hot_routes: Sequence[HotRoute] = ()) -> None:
    http_metrics = HttpMetrics()
    app.state.http_metrics = http_metrics
    app.state.metrics_registry = build_registry(http_metrics, _ws_active(app))

    layers = _shell_layers(settings, http_metrics)
    for cls, kwargs in layers:  # add_middleware prepends: the last one added is the outermost
        app.add_middleware(cls, **kwargs)
    # The hot lane's copy: the same layers (same limiter, same metrics) but the slash redirect, which
    # only rewrites the router's own redirects and a full match never gets one.
    lane: ASGIApp = HotEndpoint()
    for cls, kwargs in layers:
        if cls is not TrailingSlashRedirectMiddleware:
            lane = cls(lane, **kwargs)
    app.add_middleware(HotLane, routes=hot_routes, lane=lane)


def _shell_layers(settings: Settings, http_metrics: HttpMetrics) -> list[tuple[Any, dict[str, Any]]]:
    """The HTTP shell's middlewares, innermost first."""
    layers: list[tuple[Any, dict[str, Any]]] = [
        (TrailingSlashRedirectMiddleware, {}),
        (BodyLimitMiddleware, {"max_bytes": settings.MAX_BODY_BYTES}),
        (NulInUrlMiddleware, {}),
        (SecurityHeadersMiddleware, {}),
    ]
    org_id = settings.MOLECULE_ORG_ID.strip()
    if org_id:
        layers.append((TenantGuardMiddleware, {"org_id": org_id}))
    limiter = FixedWindowLimiter(settings.rate_limit, RATE_WINDOW_SECONDS)
    layers += [
        (RateLimitMiddleware, {"limiter": limiter, "dev_mode": settings.dev_mode_fail_open}),
        (CORSMiddleware, {"config": cors_config(settings)}),
        (MetricsMiddleware, {"metrics": http_metrics, "access": settings.ACCESS_LOG}),
    ]
    return layers
