"""`ANY /cp/*path` (control plane) and the NoRoute fallback (canvas), spec 06 §1.4.

Both are open here, as in the reference: the control plane authenticates its own calls (by the session
cookie passed on), and the canvas is the UI's HTML and scripts, served to anyone who may load the page
(no credential reaches it). `install` checks both URLs at start (a bad one stops the server, as the
reference's boot does) and mounts the canvas as the router's default app, so every middleware (CORS,
rate limit, tenant guard, security headers with the UI CSP) still runs in front of it.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.auth.deps import Ctx
from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.proxy import service
from workspace_server.proxy.service import Upstream

router = APIRouter()
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@functools.lru_cache(maxsize=8)
def _cp(url: str) -> Upstream:
    return service.cp_upstream(url)


@functools.lru_cache(maxsize=8)
def _canvas(url: str) -> Upstream:
    return service.canvas_upstream(url)


def _not_found() -> JSONResponse:
    return JSONResponse({"error": "not found"}, status_code=404)


async def serve_unmatched(ctx: AppContext, request: Request) -> Response:
    """What the reference's NoRoute does: the canvas when `CANVAS_PROXY_URL` is set, else a 404."""
    url = ctx.settings.CANVAS_PROXY_URL
    if not url:
        return _not_found()
    return await service.forward(ctx, request, _canvas(url))


# Not in the OpenAPI schema: it is the control plane's API, not ours (docs/decisions.md "Reverse proxies").
@router.api_route("/cp/{path:path}", methods=METHODS, include_in_schema=False)
async def cp_proxy(request: Request, ctx: Ctx, path: str) -> Response:
    url = ctx.settings.CP_UPSTREAM_URL
    if not url:  # not mounted in the reference: an unmatched path
        return await serve_unmatched(ctx, request)
    if not service.cp_path_allowed(request.url.path):
        return _not_found()  # the CP's admin/internal routes: refused before any upstream call
    return await service.forward(ctx, request, _cp(url))


def install(app: FastAPI, settings: Settings) -> None:
    """Validate the configured upstreams (ValueError stops the start) and mount the canvas fallback."""
    if settings.CP_UPSTREAM_URL:
        _cp(settings.CP_UPSTREAM_URL)
    if not settings.CANVAS_PROXY_URL:
        return
    _canvas(settings.CANVAS_PROXY_URL)
    previous: ASGIApp = app.router.default

    async def canvas_fallback(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a WebSocket to an unknown path: refused as before
            await previous(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await serve_unmatched(request.app.state.ctx, request)
        await response(scope, receive, send)

    app.router.default = canvas_fallback
