"""The per-org plugin allowlist (spec 06 §3.3): which plugins the workspaces of an org may install.

An "org" is a workspace id; a workspace's org is its parent if it has one, else itself (immediate parent
only, as in the reference: a grandchild is governed by its parent's list). An org without rows allows
everything. The install gate fails open on every database error, as the reference does (recorded in
docs/decisions.md): the list is a curation aid, not the security boundary — installing still needs
WorkspaceAuth on the workspace.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.authz import Actor as AuthInfo
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id, parse_uuid
from workspace_server.common.time import rfc3339
from workspace_server.context import AppContext
from workspace_server.db.schema import org_plugin_allowlist as allow
from workspace_server.db.schema import workspaces
from workspace_server.plugins.manifest import NAME_RE, is_handler_name
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(__name__)

NAME_DETAIL = "plugin names must match ^[a-z0-9][a-z0-9._-]{0,127}$"


# ---------------------------------------------------------------- store


async def _org_of(conn: AsyncConnection, ws_id: str) -> str | None:
    q = sa.select(workspaces.c.id, workspaces.c.parent_id).where(workspaces.c.id == ws_id)
    row = (await conn.execute(q)).first()
    if row is None:
        return None
    return str(row.parent_id or row.id)


async def _names(conn: AsyncConnection, org_id: str) -> list[Any]:
    q = sa.select(allow.c.plugin_name, allow.c.enabled_by, allow.c.enabled_at).where(allow.c.org_id == org_id)
    return list((await conn.execute(q.order_by(allow.c.plugin_name))).all())


async def _replace(conn: AsyncConnection, org_id: str, names: list[str], enabled_by: str) -> None:
    await conn.execute(sa.delete(allow).where(allow.c.org_id == org_id))
    unique = list(dict.fromkeys(names))  # the reference's ON CONFLICT DO NOTHING, portably
    if unique:
        rows = [
            {"id": new_id(), "org_id": org_id, "plugin_name": n, "enabled_by": enabled_by} for n in unique
        ]
        await conn.execute(sa.insert(allow), rows)


# ---------------------------------------------------------------- install gate


async def install_allowed(ctx: AppContext, ws_id: str, plugin: str) -> bool:
    """Unknown workspace, listed plugin, or an org without rows → allowed; every DB error → allowed."""
    if parse_uuid(ws_id) is None:
        return True
    try:
        async with ctx.engine.connect() as conn:
            org_id = await _org_of(conn, ws_id)
            if org_id is None:
                return True
            rows = await _names(conn, org_id)
    except Exception as exc:
        log.warning("plugin allowlist lookup for %s failed (allowing): %s", ws_id, type(exc).__name__)
        return True
    return not rows or any(r.plugin_name == plugin for r in rows)


# ---------------------------------------------------------------- GET / PUT /orgs/:id/plugins/allowlist


def check_ownership(auth: AuthInfo, org_id: str) -> None:
    """Org tokens may touch only their own org; unanchored org tokens (no org_id) nothing."""
    if auth.org_token_id is None:
        return
    if auth.org_id is None or auth.org_id != org_id:
        raise ApiError(403, "org access denied")


async def _require_org(ctx: AppContext, org_id: str) -> None:
    if parse_uuid(org_id) is None:
        raise ApiError(404, "org not found")
    try:
        async with ctx.engine.connect() as conn:
            exists = await workspace_exists(conn, org_id)
    except Exception as exc:
        log.error("org lookup failed: %s", type(exc).__name__)
        raise ApiError(500, "failed to look up org") from None
    if not exists:
        raise ApiError(404, "org not found")


async def get_allowlist(ctx: AppContext, auth: AuthInfo, org_id: str) -> dict[str, Any]:
    await _require_org(ctx, org_id)
    check_ownership(auth, org_id)
    try:
        async with ctx.engine.connect() as conn:
            rows = await _names(conn, org_id)
    except Exception as exc:
        log.error("allowlist read failed: %s", type(exc).__name__)
        raise ApiError(500, "failed to read allowlist") from None
    plugins = [
        {"plugin_name": r.plugin_name, "enabled_by": r.enabled_by, "enabled_at": rfc3339(r.enabled_at)}
        for r in rows
    ]
    return {"org_id": org_id, "plugins": plugins, "allow_all": not plugins}


def parse_put_body(data: Any) -> tuple[list[str] | None, str]:
    """(`plugins` as sent, `enabled_by`); 400s in the reference's order."""
    if not isinstance(data, dict):
        raise ApiError(400, "invalid request body")
    plugins, enabled_by = data.get("plugins"), data.get("enabled_by")
    strings = isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)
    if plugins is not None and not strings:
        raise ApiError(400, "invalid request body")
    if enabled_by is not None and not isinstance(enabled_by, str):
        raise ApiError(400, "invalid request body")
    if not enabled_by or not enabled_by.strip():
        raise ApiError(400, "enabled_by is required")
    for name in plugins or []:
        if not is_handler_name(name) or not NAME_RE.match(name):
            raise ApiError(400, "invalid plugin name", plugin_name=name, detail=NAME_DETAIL)
    return plugins, enabled_by


async def put_allowlist(ctx: AppContext, auth: AuthInfo, org_id: str, data: Any) -> dict[str, Any]:
    plugins, enabled_by = parse_put_body(data)
    await _require_org(ctx, org_id)
    check_ownership(auth, org_id)
    try:
        async with ctx.engine.begin() as conn:
            await _replace(conn, org_id, plugins or [], enabled_by)
    except Exception as exc:
        log.error("allowlist update failed: %s", type(exc).__name__)
        raise ApiError(500, "failed to update allowlist") from None
    return {"org_id": org_id, "plugins": plugins, "allow_all": not plugins}
