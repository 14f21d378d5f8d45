"""Route auth classes, exactly as spec 03 §3 orders their checks.

- AdminAuth: admin routes. - WorkspaceAuth: `/workspaces/:id/*`. - CanvasOrBearer: `PUT /canvas/viewport`.
Each is a FastAPI dependency that either returns an `AuthInfo` or raises `ApiError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request

from workspace_server.auth import tokens
from workspace_server.auth.session import verify_cp_session
from workspace_server.common.errors import DATASTORE_UNAVAILABLE, ApiError
from workspace_server.common.http import bearer_token
from workspace_server.config import DEFAULT_CORS_ORIGINS, Settings
from workspace_server.context import AppContext, get_ctx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthInfo:
    kind: str  # open | dev | admin_token | org_token | workspace_token | session | canvas
    workspace_id: str | None = None
    org_token_id: str | None = None
    org_token_prefix: str | None = None
    org_id: str | None = None


def is_same_origin_canvas(ctx: AppContext, request: Request) -> bool:
    """Only when CANVAS_PROXY_URL is set; Referer must equal the host origin or continue with `/`."""
    if not ctx.settings.CANVAS_PROXY_URL:
        return False
    host = request.headers.get("host", "")
    if not host:
        return False
    referer = request.headers.get("referer", "")
    origin = request.headers.get("origin", "")
    for scheme in ("http://", "https://"):
        base = scheme + host
        if referer == base or referer.startswith(base + "/"):
            return True
        if origin == base:
            return True
    return False


async def _org_token(ctx: AppContext, bearer: str) -> tokens.OrgToken | None:
    try:
        async with ctx.engine.begin() as conn:
            return await tokens.validate_org_token(conn, bearer)
    except Exception:
        log.exception("org token lookup failed")
        raise DATASTORE_UNAVAILABLE from None


async def _workspace_token(ctx: AppContext, bearer: str, ws_id: str | None = None) -> str | None:
    """Owner of a live workspace token (bound to `ws_id` when given); a DB error is a 503, never a 500."""
    try:
        # each statement stands alone (a lookup, then at most one last_used_at touch): no transaction
        async with ctx.autocommit.connect() as own:
            return await tokens.validate_workspace_token(own, bearer, ws_id)
    except Exception:
        log.exception("workspace token lookup failed")
        raise DATASTORE_UNAVAILABLE from None


def _org_info(org: tokens.OrgToken) -> AuthInfo:
    return AuthInfo("org_token", org_token_id=org.id, org_token_prefix=org.prefix, org_id=org.org_id)


async def admin_auth(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> AuthInfo:
    s = ctx.settings
    try:
        async with ctx.engine.connect() as conn:
            any_tokens = await tokens.any_live_token(conn)
    except Exception:
        log.exception("live token probe failed")
        raise DATASTORE_UNAVAILABLE from None
    if not any_tokens and not s.ADMIN_TOKEN:
        return AuthInfo("open")
    if s.dev_mode_fail_open:
        return AuthInfo("dev")
    cookie = request.headers.get("cookie", "")
    if cookie:
        valid, _presented = await verify_cp_session(ctx, cookie)
        if valid:
            return AuthInfo("session")
    bearer = bearer_token(request)
    if not bearer:
        raise ApiError(401, "admin auth required")
    org = await _org_token(ctx, bearer)
    if org is not None:
        return _org_info(org)
    if s.ADMIN_TOKEN:
        if tokens.constant_time_equals(bearer, s.ADMIN_TOKEN):
            return AuthInfo("admin_token")
        raise ApiError(401, "invalid admin auth token")
    ws = await _workspace_token(ctx, bearer)
    if ws is None:
        raise ApiError(401, "invalid admin auth token")
    return AuthInfo("workspace_token", workspace_id=ws)


async def workspace_auth(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> AuthInfo:
    ws_id = request.path_params.get("id", "")
    if not ws_id:
        raise ApiError(401, "missing workspace ID")
    s = ctx.settings
    bearer = bearer_token(request)
    if bearer:
        if s.ADMIN_TOKEN and tokens.constant_time_equals(bearer, s.ADMIN_TOKEN):
            return AuthInfo("admin_token")
        org = await _org_token(ctx, bearer)
        if org is not None:
            return _org_info(org)
        owner = await _workspace_token(ctx, bearer, ws_id)
        if owner is None:
            raise ApiError(401, "invalid workspace auth token")
        return AuthInfo("workspace_token", workspace_id=owner)
    if is_same_origin_canvas(ctx, request):
        return AuthInfo("canvas")
    if s.dev_mode_fail_open:
        return AuthInfo("dev")
    raise ApiError(401, "missing workspace auth token")


async def canvas_or_bearer(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> AuthInfo:
    """Spec 03 §3, except that in production mode (ADMIN_TOKEN set or MOLECULE_ENV=production) neither
    "no token exists yet" nor an Origin header authenticates: a bearer (ADMIN_TOKEN or a workspace token)
    or the configured same-origin canvas proxy is needed (issue 11 §3; docs/decisions.md)."""
    s = ctx.settings
    if s.open_bootstrap:
        try:
            async with ctx.engine.connect() as conn:
                any_tokens = await tokens.any_live_token(conn)
        except Exception:
            return AuthInfo("open")
        if not any_tokens:
            return AuthInfo("open")
    bearer = bearer_token(request)
    if bearer:
        if s.ADMIN_TOKEN and tokens.constant_time_equals(bearer, s.ADMIN_TOKEN):
            return AuthInfo("admin_token")
        ws = await _workspace_token(ctx, bearer)
        if ws is not None:
            return AuthInfo("workspace_token", workspace_id=ws)
        raise ApiError(401, "invalid admin auth token")
    if s.open_bootstrap:
        origin = request.headers.get("origin", "")
        if origin and origin in _canvas_origins(s):
            return AuthInfo("canvas")
    if is_same_origin_canvas(ctx, request):
        return AuthInfo("canvas")
    raise ApiError(401, "admin auth required")


def _canvas_origins(s: Settings) -> set[str]:
    """The localhost canvas origins plus each trimmed CORS_ORIGINS entry, compared exactly (spec 03 §3)."""
    return {*DEFAULT_CORS_ORIGINS, *(o.strip() for o in s.CORS_ORIGINS.split(",") if o.strip())}


# What `grandfathered_caller` let in: the workspace itself (one of its live tokens), the open-bootstrap
# first caller of a workspace that has no token yet, or an admin acting for a tokenless workspace.
RegistryCaller = Literal["owner", "bootstrap", "admin"]
OWNER: RegistryCaller = "owner"
BOOTSTRAP: RegistryCaller = "bootstrap"
ADMIN: RegistryCaller = "admin"


async def grandfathered_caller(ctx: AppContext, request: Request, ws_id: str) -> RegistryCaller:
    """Registry rule: once `ws_id` has a live token, the bearer must be one of its tokens.

    Returns OWNER, BOOTSTRAP or ADMIN (see above); anything else is a 401.

    The bearer is checked first: for a live agent (every heartbeat) that is the only query. Only when it
    is absent or does not match is the existence probe needed, to tell "no tokens yet" from a failure.
    A workspace with no live token passes unauthenticated only in the open bootstrap mode
    (`Settings.open_bootstrap`, the reference's behaviour); in production mode only an admin credential
    (ADMIN_TOKEN or an org token) may act for it, so no workspace is reachable without a credential
    (issue 11 §1). A DB error in the probe fails open in the open bootstrap mode, as the reference does
    for register/heartbeat, and closed (503) in production mode.
    (On Postgres the heartbeat applies the same rule inside its batch statement: registry/batch.py.)
    """
    bearer = bearer_token(request)
    if bearer and await _workspace_token(ctx, bearer, ws_id) is not None:
        return OWNER
    open_bootstrap = ctx.settings.open_bootstrap
    try:
        async with ctx.engine.connect() as conn:
            has = await tokens.has_live_token(conn, ws_id)
    except Exception:
        if not open_bootstrap:
            log.exception("token existence check failed")
            raise DATASTORE_UNAVAILABLE from None
        log.exception("token existence check failed; failing open")
        return BOOTSTRAP
    if has:
        raise grandfather_denial(bearer)
    if open_bootstrap:
        return BOOTSTRAP
    if bearer and await is_admin_bearer(ctx, bearer):
        return ADMIN
    raise grandfather_denial(bearer)


async def is_admin_bearer(ctx: AppContext, bearer: str) -> bool:
    """ADMIN_TOKEN (constant-time) or a live org token: the callers AdminAuth lets in by bearer."""
    admin = ctx.settings.ADMIN_TOKEN
    if admin and tokens.constant_time_equals(bearer, admin):
        return True
    return await _org_token(ctx, bearer) is not None


def grandfather_denial(bearer: str) -> ApiError:
    """The 401 of the grandfather rule: the workspace has a live token and the bearer is not one of them."""
    return ApiError(401, "invalid workspace auth token" if bearer else "missing workspace auth token")


AdminAuth = Annotated[AuthInfo, Depends(admin_auth)]
WorkspaceAuth = Annotated[AuthInfo, Depends(workspace_auth)]
CanvasOrBearer = Annotated[AuthInfo, Depends(canvas_or_bearer)]
Ctx = Annotated[AppContext, Depends(get_ctx)]
