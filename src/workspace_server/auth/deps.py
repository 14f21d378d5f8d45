"""The route auth classes as FastAPI dependencies: thin adapters over the authz layer (authz/).

- AdminAuth: admin routes. - WorkspaceAuth: `/workspaces/:id/*`. - CanvasOrBearer: `PUT /canvas/viewport`.
Each reads the request's credentials and asks `workspace_server.authz`, which holds the rules, their
check order (spec 03 §3) and the one DB-failure behaviour (fail closed, 503). Nothing is decided here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from workspace_server import authz
from workspace_server.authz import Actor, Credentials
from workspace_server.context import AppContext, get_ctx

# The former name of the resolved caller, kept for the handlers and tests that annotate with it.
AuthInfo = Actor


def credentials(conn: HTTPConnection) -> Credentials:
    """The credentials of a request or a WebSocket handshake (headers only)."""
    return Credentials.from_headers(conn.headers)


def is_same_origin_canvas(ctx: AppContext, request: HTTPConnection) -> bool:
    return authz.is_same_origin_canvas(ctx.settings, credentials(request))


async def admin_auth(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> Actor:
    return await authz.admin_actor(ctx, credentials(request))


async def workspace_auth(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> Actor:
    return await authz.workspace_actor(ctx, credentials(request), request.path_params.get("id", ""))


async def canvas_or_bearer(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> Actor:
    return await authz.canvas_actor(ctx, credentials(request))


async def grandfathered_caller(ctx: AppContext, request: HTTPConnection, ws_id: str) -> Actor:
    """The registry's rule (`authz.registry_actor`): the workspace's own token, the open-bootstrap caller
    of a tokenless workspace, or an admin credential for a tokenless one; anything else is a 401."""
    return await authz.registry_actor(ctx, credentials(request), ws_id)


AdminAuth = Annotated[Actor, Depends(admin_auth)]
WorkspaceAuth = Annotated[Actor, Depends(workspace_auth)]
CanvasOrBearer = Annotated[Actor, Depends(canvas_or_bearer)]
Ctx = Annotated[AppContext, Depends(get_ctx)]
