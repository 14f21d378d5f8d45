"""The caller-authorization layer: the only place that decides "this caller may act for this workspace".

Every route class and hot path asks here (issue 12 §4), so no handler can forget or vary the rule:

- `resolve_bearer` turns a bearer into an `Actor` (ADMIN_TOKEN, org token, workspace token), trying the
  sources in the order the calling route class has always used (spec 03 §3); it is the one path by which
  a token is looked up. ADMIN_TOKEN is compared in constant time; tokens are found by their sha256.
- the route classes (`admin_actor`, `workspace_actor`, `canvas_actor`) and the agent rules
  (`registry_actor`, `token_holder`, `discovery_actor`, `a2a_actor`, `claimed_caller`, `download_actor`)
  compose it with the grandfather probe, the modes (dev, open bootstrap) and the canvas checks, each in
  its route's historical order and with its historical 401 messages.
- `may_act_for` (authz/actor.py) is the rule table; `require` raises its 401.

One DB-failure behaviour: when a lookup the decision needs fails, the request is refused (fail closed):
the 503 `platform_unavailable` when the database is away (`common/errors.backing_store_down`), a 500
`auth check failed` for any other error. A failure is never read as "allowed" nor as "no such token".

No fastapi import here: services and hot routes call it with `Credentials.from_headers(...)`; the
FastAPI dependencies in auth/deps.py are thin adapters.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from typing import TYPE_CHECKING, Literal

from workspace_server.auth import tokens
from workspace_server.auth.session import verify_cp_session
from workspace_server.authz.actor import ADMIN, ANONYMOUS, ORG, WORKSPACE, Actor, Credentials, may_act_for
from workspace_server.common.errors import DATASTORE_UNAVAILABLE, ApiError, backing_store_down
from workspace_server.config import DEFAULT_CORS_ORIGINS, Settings

if TYPE_CHECKING:
    from workspace_server.context import AppContext

__all__ = [
    "HEARTBEAT_GATE_CTES",
    "Actor",
    "Credentials",
    "Source",
    "a2a_actor",
    "admin_actor",
    "admin_bearer",
    "batch_denial",
    "canvas_actor",
    "claimed_caller",
    "discovery_actor",
    "download_actor",
    "grandfather_denial",
    "heartbeat_batch_strict",
    "is_same_origin_canvas",
    "may_act_for",
    "registry_actor",
    "require",
    "resolve_bearer",
    "test_token_caller_ok",
    "token_holder",
    "workspace_actor",
]

log = logging.getLogger(__name__)

MISSING_WS_TOKEN = "missing workspace auth token"  # noqa: S105 - a message, not a secret
INVALID_WS_TOKEN = "invalid workspace auth token"  # noqa: S105
AUTH_CHECK_FAILED = "auth check failed"


class Source(Enum):
    """Where a bearer may come from; a route class lists the ones it accepts, in its order."""

    ADMIN = "admin"  # the ADMIN_TOKEN setting (skipped while it is unset)
    ORG = "org"  # org_api_tokens
    WORKSPACE = "workspace"  # workspace_auth_tokens (bound to a workspace when the caller names one)


# ---------------------------------------------------------------- the one lookup path


@asynccontextmanager
async def _store(what: str) -> AsyncIterator[None]:
    """Fail closed, whatever the mode: a lookup that fails refuses the request. The database being away
    is the 503 `platform_unavailable` (retry); any other error is a 500 `auth check failed` (a bug, which a
    retry would not cure). Never "allowed", never "no such token"."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:
        log.exception("authz: %s failed", what)
        if backing_store_down(exc):
            raise DATASTORE_UNAVAILABLE from None
        raise ApiError(500, AUTH_CHECK_FAILED) from None


async def _org_token(ctx: AppContext, bearer: str) -> tokens.OrgToken | None:
    async with _store("org token lookup"), ctx.engine.begin() as conn:
        return await tokens.validate_org_token(conn, bearer)


async def _workspace_token(ctx: AppContext, bearer: str, ws_id: str | None) -> str | None:
    # each statement stands alone (a lookup, then at most one last_used_at touch): no transaction
    async with _store("workspace token lookup"), ctx.autocommit.connect() as conn:
        return await tokens.validate_workspace_token(conn, bearer, ws_id)


async def _has_live_token(ctx: AppContext, ws_id: str) -> bool:
    """The grandfather probe: has `ws_id` been given a token that is still live?"""
    async with _store("token existence probe"), ctx.engine.connect() as conn:
        return await tokens.has_live_token(conn, ws_id)


async def _any_live_token(ctx: AppContext) -> bool:
    async with _store("live token probe"), ctx.engine.connect() as conn:
        return await tokens.any_live_token(conn)


def _is_admin_token(settings: Settings, bearer: str) -> bool:
    admin = settings.ADMIN_TOKEN
    return bool(admin) and bool(bearer) and tokens.constant_time_equals(bearer, admin)


async def resolve_bearer(
    ctx: AppContext, bearer: str, sources: Sequence[Source], *, bound_to: str | None = None
) -> Actor:
    """The actor a bearer stands for, trying `sources` in order; ANONYMOUS without one, UNKNOWN if none
    matched. A workspace token counts only for `bound_to` when given (an unbound lookup is AdminAuth's
    and CanvasOrBearer's: any live workspace token). The first match wins, so later lookups (and their
    `last_used_at` touches) are not made."""
    if not bearer:
        return Actor.ANONYMOUS
    for source in sources:
        if source is Source.ADMIN:
            if _is_admin_token(ctx.settings, bearer):
                return Actor.ADMIN
        elif source is Source.ORG:
            org = await _org_token(ctx, bearer)
            if org is not None:
                return Actor.org(org.id, org.prefix, org.org_id)
        else:
            owner = await _workspace_token(ctx, bearer, bound_to)
            if owner is not None:
                return Actor.workspace(owner)
    return Actor.UNKNOWN


def require(
    actor: Actor, ws_id: str, *, missing: str = MISSING_WS_TOKEN, invalid: str = INVALID_WS_TOKEN
) -> Actor:
    """`actor` if it may act for `ws_id`, else the 401 (`missing` when no credential was presented)."""
    if may_act_for(actor, ws_id):
        return actor
    raise ApiError(401, missing if actor.kind == ANONYMOUS else invalid)


# ---------------------------------------------------------------- canvas


def is_same_origin_canvas(settings: Settings, creds: Credentials) -> bool:
    """Only when CANVAS_PROXY_URL is set; Referer must equal the host origin or continue with `/`."""
    if not settings.CANVAS_PROXY_URL or not creds.host:
        return False
    for scheme in ("http://", "https://"):
        base = scheme + creds.host
        if creds.referer == base or creds.referer.startswith(base + "/"):
            return True
        if creds.origin == base:
            return True
    return False


def _canvas_origins(s: Settings) -> set[str]:
    """The localhost canvas origins plus each trimmed CORS_ORIGINS entry, compared exactly (spec 03 §3)."""
    return {*DEFAULT_CORS_ORIGINS, *(o.strip() for o in s.CORS_ORIGINS.split(",") if o.strip())}


# ---------------------------------------------------------------- the three route classes (spec 03 §3)


async def admin_actor(ctx: AppContext, creds: Credentials) -> Actor:
    """AdminAuth: open while no token exists and ADMIN_TOKEN is unset; dev; session; org token, then
    ADMIN_TOKEN (when set: nothing else) or, without it, any live workspace token."""
    s = ctx.settings
    if not await _any_live_token(ctx) and not s.ADMIN_TOKEN:
        return Actor.OPEN
    if s.dev_mode_fail_open:
        return Actor.DEV
    if creds.cookie:
        valid, _presented = await verify_cp_session(ctx, creds.cookie)
        if valid:
            return Actor.SESSION
    if not creds.bearer:
        raise ApiError(401, "admin auth required")
    order = (Source.ORG, Source.ADMIN) if s.ADMIN_TOKEN else (Source.ORG, Source.WORKSPACE)
    actor = await resolve_bearer(ctx, creds.bearer, order)
    if not actor.authenticated:
        raise ApiError(401, "invalid admin auth token")
    return actor


async def workspace_actor(ctx: AppContext, creds: Credentials, ws_id: str) -> Actor:
    """WorkspaceAuth for `/workspaces/:id/*`: a bearer (ADMIN_TOKEN, org token, the workspace's own
    token) decides alone; without one the same-origin canvas, then dev mode; no DB call without a bearer."""
    if not ws_id:
        raise ApiError(401, "missing workspace ID")
    if creds.bearer:
        actor = await resolve_bearer(
            ctx, creds.bearer, (Source.ADMIN, Source.ORG, Source.WORKSPACE), bound_to=ws_id
        )
        return require(actor, ws_id)
    if is_same_origin_canvas(ctx.settings, creds):
        return Actor.CANVAS
    if ctx.settings.dev_mode_fail_open:
        return Actor.DEV
    raise ApiError(401, MISSING_WS_TOKEN)


async def canvas_actor(ctx: AppContext, creds: Credentials) -> Actor:
    """CanvasOrBearer (`PUT /canvas/viewport`). In production mode neither "no token exists yet" nor an
    Origin header authenticates: ADMIN_TOKEN, a workspace token or the same-origin proxy is needed."""
    s = ctx.settings
    if s.open_bootstrap and not await _any_live_token(ctx):
        return Actor.OPEN
    if creds.bearer:
        actor = await resolve_bearer(ctx, creds.bearer, (Source.ADMIN, Source.WORKSPACE))
        if not actor.authenticated:
            raise ApiError(401, "invalid admin auth token")
        return actor
    if s.open_bootstrap and creds.origin and creds.origin in _canvas_origins(s):
        return Actor.CANVAS
    if is_same_origin_canvas(s, creds):
        return Actor.CANVAS
    raise ApiError(401, "admin auth required")


# ---------------------------------------------------------------- agent rules (the grandfather rule)


def grandfather_denial(bearer: str) -> ApiError:
    """The 401 of the grandfather rule: the workspace has a live token and the bearer is not one of them."""
    return ApiError(401, INVALID_WS_TOKEN if bearer else MISSING_WS_TOKEN)


async def admin_bearer(ctx: AppContext, bearer: str) -> Actor:
    """ADMIN_TOKEN or a live org token (the callers AdminAuth lets in by bearer), else UNKNOWN/ANONYMOUS."""
    return await resolve_bearer(ctx, bearer, (Source.ADMIN, Source.ORG))


async def registry_actor(ctx: AppContext, creds: Credentials, ws_id: str) -> Actor:
    """Register, heartbeat, update-card: once `ws_id` has a live token the bearer must be one of them.

    The workspace's own token (WORKSPACE), the open-bootstrap caller of a tokenless workspace (BOOTSTRAP),
    or, in production mode, an admin credential acting for a tokenless workspace (ADMIN/ORG); anything
    else is the grandfather 401. The bearer is checked first: for a live agent (every heartbeat) that is
    the only query. (On Postgres the heartbeat applies the same rule inside its batch statement:
    registry/batch.py, with `HEARTBEAT_GATE_CTES` from here.)"""
    bearer = creds.bearer
    if bearer:
        own = await resolve_bearer(ctx, bearer, (Source.WORKSPACE,), bound_to=ws_id)
        if own.authenticated:
            return own
    if await _has_live_token(ctx, ws_id):
        raise grandfather_denial(bearer)
    if ctx.settings.open_bootstrap:
        return Actor.bootstrap(ws_id)
    admin = await admin_bearer(ctx, bearer)
    if admin.authenticated:
        return admin
    raise grandfather_denial(bearer)


def heartbeat_batch_strict(settings: Settings) -> bool:
    """Whether the Postgres heartbeat batch denies every beat without its workspace's token (production
    mode: no grandfathering, issue 11 §1)."""
    return not settings.open_bootstrap


# The registry rule in SQL, for the Postgres heartbeat batch (registry/batch.py), which supplies `hb`
# (ord, id, token_hash = sha256 of the bearer or NULL) and `:strict` (`heartbeat_batch_strict`). A bearer
# counts only if it is live, bound to this workspace and the workspace is not removed (exactly the lookup
# of `auth/tokens.validate_workspace_token`); without one the beat passes only while the workspace has no
# live token at all (the grandfather rule), and never when strict. An admin bearer is no workspace token:
# such a beat is denied here and decided per step (`batch_denial`, `registry_actor`).
HEARTBEAT_GATE_CTES = """
tok AS (
  SELECT hb.ord, t.id AS token_id, t.last_used_at
  FROM hb
  JOIN workspace_auth_tokens t
    ON t.token_hash = hb.token_hash AND t.workspace_id = hb.id AND t.revoked_at IS NULL
  JOIN workspaces tw ON tw.id = t.workspace_id AND tw.status != 'removed'
),
gate AS (
  SELECT hb.*, tok.token_id IS NOT NULL AS bearer_ok,
         tok.token_id IS NULL AND (CAST(:strict AS boolean) OR EXISTS (
           SELECT 1 FROM workspace_auth_tokens t2 WHERE t2.workspace_id = hb.id AND t2.revoked_at IS NULL
         )) AS denied
  FROM hb LEFT JOIN tok ON tok.ord = hb.ord
)
"""


def batch_denial(settings: Settings, creds: Credentials) -> ApiError | None:
    """What a heartbeat the batch statement denied gets: the grandfather 401, or None when only the
    per-step `registry_actor` can decide (production mode, a bearer that may be an admin credential for
    a tokenless workspace: the batch knows workspace tokens only, and wrote nothing)."""
    if settings.open_bootstrap or not creds.bearer:
        return grandfather_denial(creds.bearer)
    return None


async def token_holder(
    ctx: AppContext,
    creds: Credentials,
    ws_id: str,
    *,
    tokenless: Literal["always", "open_bootstrap"],
    missing: str = MISSING_WS_TOKEN,
    invalid: str = INVALID_WS_TOKEN,
) -> Actor:
    """Once `ws_id` has a live token, only one of its tokens passes. A tokenless workspace passes as
    BOOTSTRAP `always` (secrets values, the state poll: behind WorkspaceAuth already) or only in the
    `open_bootstrap` mode (the A2A caller, the events socket: issue 11 §1). Probe first, as these routes
    always did."""
    has = await _has_live_token(ctx, ws_id)
    if not has and (tokenless == "always" or ctx.settings.open_bootstrap):
        return Actor.bootstrap(ws_id)
    if not creds.bearer:
        raise ApiError(401, missing)
    actor = await resolve_bearer(ctx, creds.bearer, (Source.WORKSPACE,), bound_to=ws_id)
    return require(actor, ws_id, missing=missing, invalid=invalid)


async def discovery_actor(ctx: AppContext, creds: Credentials, ws_id: str) -> Actor:
    """Discovery and peers (the caller is `ws_id`): grandfather rule, then the dev hatch, then a CP
    session cookie (a presented invalid one is a 401 of its own), then a bearer bound to `ws_id`."""
    s = ctx.settings
    has = await _has_live_token(ctx, ws_id)
    # a tokenless workspace is an unauthenticated identity only in the open bootstrap mode (issue 11 §1)
    if not has and s.open_bootstrap:
        return Actor.bootstrap(ws_id)
    if s.dev_mode_fail_open:
        return Actor.DEV
    if creds.cookie:
        valid, presented = await verify_cp_session(ctx, creds.cookie)
        if presented:
            if valid:
                return Actor.SESSION
            raise ApiError(401, "invalid session")
    if not creds.bearer:
        raise ApiError(401, MISSING_WS_TOKEN)
    actor = await resolve_bearer(ctx, creds.bearer, (Source.WORKSPACE,), bound_to=ws_id)
    return require(actor, ws_id)


async def a2a_actor(
    ctx: AppContext, creds: Credentials, target: str, caller: str, *, missing: str, invalid: str
) -> Actor:
    """`POST /workspaces/:id/a2a`. A caller workspace (`X-Workspace-ID`) proves itself with its token
    (`token_holder`, tokenless only in open bootstrap); in open bootstrap a workspace calling itself needs
    nothing. A header-less call is the canvas: open in open bootstrap (spec 04 BUG 8), else it needs
    WorkspaceAuth's credentials for the target (the canvas's admin bearer, an org token, same origin)."""
    open_bootstrap = ctx.settings.open_bootstrap
    if caller and (caller != target or not open_bootstrap):
        return await token_holder(
            ctx, creds, caller, tokenless="open_bootstrap", missing=missing, invalid=invalid
        )
    if not caller and not open_bootstrap:
        return await workspace_actor(ctx, creds, target)
    return Actor.bootstrap(caller) if caller else Actor.CANVAS


async def claimed_caller(ctx: AppContext, creds: Credentials, actor: Actor, caller: str | None) -> None:
    """The terminal's KI-005 guard: a bearer other than an org token, sent with a claimed caller
    workspace, must be that workspace's token. `caller` None: the claim was no workspace id."""
    if not creds.bearer or actor.org_token_id is not None:
        return
    owner = Actor.UNKNOWN
    if caller is not None:
        owner = await resolve_bearer(ctx, creds.bearer, (Source.WORKSPACE,), bound_to=caller)
    if owner.kind != WORKSPACE:
        raise ApiError(401, "invalid token for claimed workspace")


async def download_actor(ctx: AppContext, actor: Actor, ws_id: str) -> Actor:
    """Plugin download (behind WorkspaceAuth): once the workspace has a live token, only its own token or
    ADMIN_TOKEN; an org token, the canvas or dev mode only while it has none."""
    if actor.kind == ADMIN or (actor.kind == WORKSPACE and actor.workspace_id == ws_id):
        return actor
    if await _has_live_token(ctx, ws_id):
        raise ApiError(401, INVALID_WS_TOKEN if actor.kind == ORG else MISSING_WS_TOKEN)
    return actor


def test_token_caller_ok(settings: Settings, authorization: str) -> bool:
    """The test-token hatch (#112): with ADMIN_TOKEN set only that exact secret passes, read from the raw
    header without trimming; without it the hatch is open (it is off in production anyway)."""
    if not settings.ADMIN_TOKEN:
        return True
    return _is_admin_token(settings, authorization.removeprefix("Bearer "))
