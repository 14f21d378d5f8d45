"""Assign, replace, remove and move a workspace's agent (spec 01 §3), each in one transaction.

Differences from the reference (docs/decisions.md, Agents): replace is atomic (the reference retired the
old agent, then inserted the new one in a second statement, so a failure left the workspace with none);
"one active agent per workspace" is a unique index, so concurrent assigns cannot both win; a workspace
token may move its agent only to a workspace its own may talk to under the hierarchy rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.agents import store
from workspace_server.authz import Actor as AuthInfo
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.registry.access import can_communicate
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(__name__)
T = TypeVar("T")

BAD_BODY = "invalid request body"
WS_NOT_FOUND = "workspace not found"
ALREADY_ACTIVE = "workspace already has an active agent, use PATCH to replace"
TARGET_BUSY = "target workspace already has an active agent"


def required_text(data: Any, key: str) -> str:
    """A non-empty string field (Go's `binding:"required"`), else 400."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ApiError(400, BAD_BODY)
    return value


async def _tx(
    ctx: AppContext, work: Callable[[AsyncConnection], Awaitable[T]], conflict: str, what: str
) -> T:
    """`work` in one transaction; losing the one-active-agent race is the 409 `conflict`."""
    try:
        async with ctx.engine.begin() as conn:
            return await work(conn)
    except ApiError:
        raise
    except sa.exc.IntegrityError:
        raise ApiError(409, conflict) from None
    except Exception:
        log.exception("agents: %s failed", what)
        raise ApiError(500, f"failed to {what}") from None


async def assign(ctx: AppContext, ws_id: str, model: str) -> dict[str, Any]:
    async def work(conn: AsyncConnection) -> str:
        if not await workspace_exists(conn, ws_id, include_removed=False):
            raise ApiError(404, WS_NOT_FOUND)
        if await store.active(conn, ws_id) is not None:
            raise ApiError(409, ALREADY_ACTIVE)
        return await store.insert(conn, ws_id, model)

    agent_id = await _tx(ctx, work, ALREADY_ACTIVE, "assign agent")
    await ctx.events.record("AGENT_ASSIGNED", ws_id, {"agent_id": agent_id, "model": model})
    return {"agent_id": agent_id, "model": model}


async def replace(ctx: AppContext, ws_id: str, model: str) -> dict[str, Any]:
    async def work(conn: AsyncConnection) -> tuple[str, str]:
        old = await store.active(conn, ws_id)
        if old is None:
            raise ApiError(404, "no active agent to replace")
        await store.retire(conn, old.id, "replaced", "model_replaced", utcnow())
        return await store.insert(conn, ws_id, model), str(old.model)

    agent_id, old_model = await _tx(ctx, work, ALREADY_ACTIVE, "replace agent")
    body = {"agent_id": agent_id, "model": model, "old_model": old_model}
    await ctx.events.record("AGENT_REPLACED", ws_id, body)
    return body


async def remove(ctx: AppContext, ws_id: str) -> dict[str, Any]:
    async def work(conn: AsyncConnection) -> Any:
        current = await store.active(conn, ws_id)
        if current is None:
            raise ApiError(404, "no active agent to remove")
        await store.retire(conn, current.id, "removed", "manual_removal", utcnow())
        return current

    gone = await _tx(ctx, work, ALREADY_ACTIVE, "remove agent")
    await ctx.events.record("AGENT_REMOVED", ws_id, {"agent_id": gone.id, "model": gone.model})
    return {"status": "removed", "agent_id": gone.id}


async def move(ctx: AppContext, source: str, raw_target: str, auth: AuthInfo) -> dict[str, Any]:
    target = parse_uuid(raw_target)
    if target is None:
        raise ApiError(404, "target workspace not found")
    if auth.kind == "workspace_token" and not await can_communicate(ctx.engine, source, target):
        raise ApiError(403, "access denied: workspaces cannot communicate per hierarchy rules")

    async def work(conn: AsyncConnection) -> Any:
        if not await workspace_exists(conn, target, include_removed=False):
            raise ApiError(404, "target workspace not found")
        moving = await store.active(conn, source)
        if moving is None:
            raise ApiError(404, "no active agent in source workspace")
        if await store.active(conn, target) is not None:
            raise ApiError(409, TARGET_BUSY)
        await store.move(conn, moving.id, target)
        return moving

    moved = await _tx(ctx, work, TARGET_BUSY, "move agent")
    base = {"agent_id": moved.id, "model": moved.model}
    await ctx.events.record("AGENT_MOVED", source, {**base, "target_workspace_id": target})
    await ctx.events.record("AGENT_MOVED", target, {**base, "source_workspace_id": source})
    return {**base, "from_workspace": source, "to_workspace": target}
