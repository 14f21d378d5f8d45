"""Global middleware (spec 06 §1.1, spec 03 §4), written as plain ASGI so streaming responses (SSE) and
WebSockets pass through untouched. One concern a module, as Starlette's own middleware package:

    asgi              the helpers they share (header reads, default headers, refusing before the app)
    metrics           request counter + access log; route_labels maps a request to its route template
    cors, ratelimit, tenant, security_headers, body_limit, url_guard, trailing_slash   one middleware each
    stack             the wiring: `install_middleware`

Stack, outermost first:

    hot lane → metrics → CORS → per-IP rate limit → TenantGuard → security headers → body limit
             → URL guard → slash redirect → app

The hot lane (common/routing.py) sends the agents' hot routes through a second copy of the same stack
(sharing the rate limiter and the metrics) straight to their endpoints.

The reference orders CORS → rate limit → metrics; here the metrics recorder sits outside the other two so
that the requests they refuse (CORS 403, 429) are counted as well. It changes no header, so what a client
sees is the reference's order: 429s and TenantGuard 404s carry no security headers, CORS refusals carry no
rate-limit headers.

This module re-exports what the app, the OpenAPI module and the tests import, so `middleware.X` keeps
meaning what it did when the package was one file.
"""

from __future__ import annotations

from workspace_server.middleware.asgi import (
    ABORTED,
    JSON_TYPE,
    Headers,
    client_ip,
    deny_websocket,
    header,
    refuse,
    send_response,
)
from workspace_server.middleware.body_limit import BODY_TOO_LARGE, BodyLimitMiddleware, BodyTooLarge
from workspace_server.middleware.cors import CorsConfig, CORSMiddleware, cors_config
from workspace_server.middleware.metrics import MetricsMiddleware
from workspace_server.middleware.ratelimit import RATE_WINDOW_SECONDS, RateLimitMiddleware
from workspace_server.middleware.route_labels import RouteTemplates, effective_routes
from workspace_server.middleware.security_headers import (
    API_CSP,
    UI_CSP,
    SecurityHeadersMiddleware,
    is_api_path,
)
from workspace_server.middleware.stack import install_middleware
from workspace_server.middleware.tenant import TENANT_ALLOWLIST, TenantGuardMiddleware, org_from_replay_src
from workspace_server.middleware.trailing_slash import TrailingSlashRedirectMiddleware
from workspace_server.middleware.url_guard import INVALID_URL, UrlGuardMiddleware

__all__ = [
    "ABORTED",
    "API_CSP",
    "BODY_TOO_LARGE",
    "INVALID_URL",
    "JSON_TYPE",
    "RATE_WINDOW_SECONDS",
    "TENANT_ALLOWLIST",
    "UI_CSP",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "CORSMiddleware",
    "CorsConfig",
    "Headers",
    "MetricsMiddleware",
    "RateLimitMiddleware",
    "RouteTemplates",
    "SecurityHeadersMiddleware",
    "TenantGuardMiddleware",
    "TrailingSlashRedirectMiddleware",
    "UrlGuardMiddleware",
    "client_ip",
    "cors_config",
    "deny_websocket",
    "effective_routes",
    "header",
    "install_middleware",
    "is_api_path",
    "org_from_replay_src",
    "refuse",
    "send_response",
]
