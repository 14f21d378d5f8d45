"""Token management rules: workspace tokens, org API tokens, the test-token hatch (spec 03 §3)."""

from __future__ import annotations

import logging
import re
from typing import Any

from workspace_server import authz
from workspace_server.auth import tokens as auth_tokens
from workspace_server.authz import Actor as AuthInfo
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonbody import INVALID_JSON, parse_json
from workspace_server.common.time import rfc3339
from workspace_server.context import AppContext
from workspace_server.tokens import store
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

MAX_TOKENS_PER_WORKSPACE = 50
DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 50, 200
ORG_TOKEN_LIST_MAX = 500
ORG_TOKEN_NAME_MAX = 100
MINT_RATE, MINT_INTERVAL = 10, 3600.0  # the app's `ctx.mint_limiter` (built in app.py)
TOKEN_MESSAGE = "Save this token now — it cannot be retrieved again."  # noqa: S105
ORG_TOKEN_WARNING = "copy this token now; it will not be shown again"  # noqa: S105

_INT = re.compile(r"[+-]?[0-9]+")


def _atoi(raw: str | None) -> int | None:
    """Go's strconv.Atoi: optional sign and digits only."""
    if raw is None or not _INT.fullmatch(raw):
        return None
    return int(raw)


def page_params(limit_raw: str | None, offset_raw: str | None) -> tuple[int, int]:
    """limit 1..200 (else 50), offset >= 0 (else 0): out-of-range values fall back, as upstream does."""
    limit = _atoi(limit_raw)
    offset = _atoi(offset_raw)
    return (
        limit if limit is not None and 0 < limit <= MAX_LIST_LIMIT else DEFAULT_LIST_LIMIT,
        offset if offset is not None and offset >= 0 else 0,
    )


def _workspace_id(raw: str) -> str:
    ws_id = parse_uuid(raw)
    if ws_id is None:
        raise ApiError(400, "invalid workspace ID")
    return ws_id


# ---- workspace tokens ----


async def list_workspace_tokens(ctx: AppContext, raw_id: str, limit: int, offset: int) -> dict[str, Any]:
    ws_id = _workspace_id(raw_id)
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.list_workspace_tokens(conn, ws_id, limit, offset)
    except Exception:
        log.exception("listing tokens of %s failed", ws_id)
        raise ApiError(500, "failed to list tokens") from None
    items = [
        {
            "id": r.id,
            "prefix": r.prefix,
            "created_at": rfc3339(r.created_at),
            "last_used_at": rfc3339(r.last_used_at),
        }
        for r in rows
    ]
    return {"count": len(items), "tokens": items}  # gin.H: keys sorted on the wire


async def create_workspace_token(ctx: AppContext, raw_id: str) -> dict[str, Any]:
    """Mint one more token. An admin/org bearer passes WorkspaceAuth for any id, so the workspace must
    exist and not be removed: a token for nothing would only re-close AdminAuth's fresh-install window."""
    ws_id = _workspace_id(raw_id)
    try:
        async with ctx.engine.begin() as conn:
            status = await store.lock_workspace_status(conn, ws_id)
            if status is None or status == Status.REMOVED:
                raise ApiError(404, "workspace not found")
            if await store.count_live_workspace_tokens(conn, ws_id) >= MAX_TOKENS_PER_WORKSPACE:
                raise ApiError(429, f"maximum {MAX_TOKENS_PER_WORKSPACE} active tokens per workspace")
            token = await auth_tokens.issue_workspace_token(conn, ws_id)
    except ApiError:
        raise
    except Exception:
        log.exception("issuing a token for %s failed", ws_id)
        raise ApiError(500, "failed to create token") from None
    log.info("issued a new token for workspace %s", ws_id)
    return {"auth_token": token, "message": TOKEN_MESSAGE, "workspace_id": ws_id}  # gin.H order


async def revoke_workspace_token(ctx: AppContext, raw_id: str, token_id: str) -> None:
    ws_id = _workspace_id(raw_id)
    tid = parse_uuid(token_id)
    if tid is None:  # no row can have this id
        raise ApiError(404, "token not found or already revoked")
    try:
        async with ctx.engine.begin() as conn:
            revoked = await store.revoke_workspace_token(conn, ws_id, tid)
    except Exception:
        log.exception("revoking token %s of %s failed", tid, ws_id)
        raise ApiError(500, "failed to revoke token") from None
    if not revoked:
        raise ApiError(404, "token not found or already revoked")
    log.info("revoked token %s of workspace %s", tid, ws_id)


# ---- test-token hatch (GET /admin/workspaces/:id/test-token) ----


def check_test_token_access(ctx: AppContext, authorization: str) -> None:
    """404 when disabled (hides the route); with ADMIN_TOKEN set only that exact secret passes (#112)."""
    s = ctx.settings
    if not s.test_tokens_enabled:
        raise ApiError(404, "not found")
    if not authz.test_token_caller_ok(s, authorization):
        raise ApiError(401, "admin auth required")


async def mint_test_token(ctx: AppContext, raw_id: str) -> dict[str, Any]:
    ws_id = parse_uuid(raw_id)
    if ws_id is None:
        raise ApiError(404, "workspace not found")
    try:
        async with ctx.engine.connect() as conn:
            row = await get_workspace(conn, ws_id)
    except Exception:
        log.exception("test-token lookup of %s failed", ws_id)
        raise ApiError(500, "lookup failed") from None
    if row is None or row.status == Status.REMOVED:  # a removed workspace's token could never validate
        raise ApiError(404, "workspace not found")
    try:
        async with ctx.engine.begin() as conn:
            token = await auth_tokens.issue_workspace_token(conn, ws_id)
    except Exception:
        log.exception("test-token issue for %s failed", ws_id)
        raise ApiError(500, "token issue failed") from None
    log.info("admin: issued test token for workspace %s", ws_id)
    return {"auth_token": token, "workspace_id": ws_id}


# ---- org API tokens ----


def check_mint_limit(ctx: AppContext, ip: str) -> None:
    """The extra 10/hour/IP limiter on POST /org/tokens; off in dev mode like the global one."""
    if ctx.settings.dev_mode_fail_open:
        return
    decision = ctx.mint_limiter.hit(ip)
    if not decision.allowed:
        raise ApiError(
            429, "rate limit exceeded", retry_after=decision.retry_after, headers=decision.headers()
        )


def parse_org_token_name(raw: bytes) -> str:
    """Optional `{"name"}`; a body that is not JSON (or a non-string name) means no name."""
    body = parse_json(raw, INVALID_JSON, if_malformed=None) if raw.strip() else None
    name = body.get("name") if isinstance(body, dict) else None
    name = name if isinstance(name, str) else ""
    if len(name) > ORG_TOKEN_NAME_MAX:
        raise ApiError(400, "name too long (max 100 chars)")
    if "\x00" in name:  # Postgres text cannot hold it: bad input, not a failed mint
        raise ApiError(400, "name must not contain NUL characters")
    return name


def _provenance(auth: AuthInfo, cookie_present: bool) -> tuple[str, str | None]:
    """(created_by, org_id). Only a minting org token passes on its org anchor; nothing else sets one."""
    if auth.kind == "org_token" and auth.org_token_prefix:
        return f"org-token:{auth.org_token_prefix}", auth.org_id
    return ("session" if cookie_present else "admin-token"), None


async def mint_org_token(ctx: AppContext, auth: AuthInfo, name: str, cookie_present: bool) -> dict[str, Any]:
    created_by, org_id = _provenance(auth, cookie_present)
    try:
        async with ctx.engine.begin() as conn:
            token_id, token = await store.insert_org_token(
                conn, name=name, created_by=created_by, org_id=org_id
            )
    except Exception:
        log.exception("minting an org token failed")
        raise ApiError(500, "failed to mint token") from None
    log.info("org token minted id=%s by=%s org=%s", token_id, created_by, org_id)
    out: dict[str, Any] = {"id": token_id, "prefix": token[: store.PREFIX_LEN]}
    if name:
        out["name"] = name
    out.update(auth_token=token, warning=ORG_TOKEN_WARNING)
    return out


async def list_org_tokens(ctx: AppContext) -> dict[str, Any]:
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.list_org_tokens(conn, ORG_TOKEN_LIST_MAX)
    except Exception:
        log.exception("listing org tokens failed")
        raise ApiError(500, "failed to list tokens") from None
    items = [_org_token_item(r) for r in rows]
    return {"count": len(items), "tokens": items}  # gin.H: keys sorted on the wire


def _org_token_item(r: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"id": r.id, "prefix": r.prefix}
    for key in ("name", "org_id", "created_by"):  # empty fields are omitted, as upstream's omitempty
        if getattr(r, key):
            item[key] = getattr(r, key)
    item["created_at"] = rfc3339(r.created_at)
    if r.last_used_at is not None:
        item["last_used_at"] = rfc3339(r.last_used_at)
    return item


async def revoke_org_token(ctx: AppContext, raw_id: str) -> dict[str, Any]:
    token_id = parse_uuid(raw_id)
    if token_id is None:
        raise ApiError(404, "token not found or already revoked")
    try:
        async with ctx.engine.begin() as conn:
            revoked = await store.revoke_org_token(conn, token_id)
    except Exception:
        log.exception("revoking org token %s failed", token_id)
        raise ApiError(500, "failed to revoke") from None
    if not revoked:
        raise ApiError(404, "token not found or already revoked")
    log.info("org token revoked id=%s", token_id)
    return {"revoked": token_id}
