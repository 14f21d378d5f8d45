"""The wiring: which middlewares wrap the app, in which order, and the hot lane's copy of the same stack."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from workspace_server.auth.ratelimit import FixedWindowLimiter
from workspace_server.common.routing import HotEndpoint, HotLane, HotRoute
from workspace_server.config import Settings
from workspace_server.middleware.body_limit import BodyLimitMiddleware
from workspace_server.middleware.cors import CORSMiddleware, cors_config
from workspace_server.middleware.hot_shell import HotShell
from workspace_server.middleware.metrics import MetricsMiddleware
from workspace_server.middleware.ratelimit import RATE_WINDOW_SECONDS, RateLimitMiddleware
from workspace_server.middleware.security_headers import SecurityHeadersMiddleware
from workspace_server.middleware.tenant import TenantGuardMiddleware
from workspace_server.middleware.trailing_slash import TrailingSlashRedirectMiddleware
from workspace_server.middleware.url_guard import UrlGuardMiddleware
from workspace_server.observability.metrics import HttpMetrics, build_registry


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
    hot_lane = HotLane(hot_routes, _hot_shell(layers), owner=app)
    app.state.hot_lane = hot_lane  # the server's protocol enters it directly (serving.py)
    build_stack = app.build_middleware_stack

    def build_with_hot_lane() -> ASGIApp:
        # The hot lane goes outside even FastAPI's own layers (its error, telemetry and body-size
        # middlewares): HotEndpoint renders every error itself, as the app's handlers would.
        return hot_lane.wrapping(build_stack())

    app.build_middleware_stack = build_with_hot_lane  # type: ignore[method-assign]


def _hot_shell(layers: list[tuple[Any, dict[str, Any]]]) -> HotShell:
    """The hot lane's shell (hot_shell.py): the same middlewares, with the same limiter and metrics, as
    objects it asks for decisions. The slash redirect is left out: it only rewrites the router's own
    redirects, and a full match of a hot route never gets one."""
    endpoint = HotEndpoint()
    made = {
        cls: cls(endpoint, **kwargs) for cls, kwargs in layers if cls is not TrailingSlashRedirectMiddleware
    }
    metrics = made.pop(MetricsMiddleware)
    guards = list(reversed(made.values()))  # outermost first
    return HotShell(endpoint, guards, made[BodyLimitMiddleware], metrics)


def _shell_layers(settings: Settings, http_metrics: HttpMetrics) -> list[tuple[Any, dict[str, Any]]]:
    """The HTTP shell's middlewares, innermost first."""
    layers: list[tuple[Any, dict[str, Any]]] = [
        (TrailingSlashRedirectMiddleware, {}),
        (UrlGuardMiddleware, {}),
        (BodyLimitMiddleware, {"max_bytes": settings.MAX_BODY_BYTES}),
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
