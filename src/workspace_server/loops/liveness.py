"""Liveness sweep: live workspaces that stopped heartbeating go offline (spec 03 §5, DESIGN §6).

Decided from `last_heartbeat_at` in the database, never from Redis key expiry (the reference needed
`notify-keyspace-events KEA` set by hand and silently did nothing without it). Agents we run go offline
after `LIVENESS_TTL_SECONDS` (180, the reference's key TTL) and are handed to the restart hook; external
agents after `REMOTE_LIVENESS_STALE_AFTER` (90) and are never restarted by us.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from workspace_server.common.kv import clear_workspace_keys
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext, RestartHook
from workspace_server.loops.store import (
    EXTERNAL,
    Candidate,
    heartbeat_stale,
    stale_live_workspaces,
)

log = logging.getLogger(__name__)

RESTARTS_GROUP = "liveness-restart"  # the task supervisor group of the restarts sweeps start


async def sweep_liveness(ctx: AppContext) -> list[str]:
    """One pass; returns the ids moved offline."""
    now = utcnow()
    s = ctx.settings
    ours = heartbeat_stale(now - timedelta(seconds=s.LIVENESS_TTL_SECONDS), external=False)
    remote = heartbeat_stale(now - timedelta(seconds=s.remote_liveness_stale_after), external=True)
    offline: list[str] = []
    for cond in (ours, remote):
        for cand in await stale_live_workspaces(ctx, cond):
            try:
                if await _mark_offline(ctx, cand, cond):
                    offline.append(cand.id)
            except Exception:  # one bad row must not starve the others
                log.exception("liveness sweep: could not mark %s offline", cand.id)
    return offline


async def _mark_offline(ctx: AppContext, cand: Candidate, still_stale: sa.ColumnElement[bool]) -> bool:
    changed = await ctx.lifecycle.mark_offline(cand.id, guard=still_stale)
    if not changed:
        return False
    log.info("workspace %s missed heartbeats; now offline", cand.id)
    try:
        await clear_workspace_keys(ctx.kv, cand.id)
    except Exception:
        log.warning("could not clear cache keys of %s", cand.id, exc_info=True)
    if cand.runtime != EXTERNAL:
        _start_restart(ctx, cand.id)
    return True


def _start_restart(ctx: AppContext, ws_id: str) -> None:
    """Restart in the background so one slow restart does not hold up the sweep."""
    hook = ctx.restart_hook
    if hook is None:
        return
    ctx.tasks.spawn(f"restart:{ws_id}", _run_restart(hook, ws_id), group=RESTARTS_GROUP)


async def _run_restart(hook: RestartHook, ws_id: str) -> None:
    try:
        await hook(ws_id)
    except Exception:
        log.exception("auto-restart of %s failed", ws_id)


async def wait_restarts(ctx: AppContext) -> None:
    """Wait for restarts started by past sweeps (tests, orderly shutdown)."""
    await ctx.tasks.wait(RESTARTS_GROUP)


async def cancel_restarts(ctx: AppContext) -> None:
    await ctx.tasks.cancel(RESTARTS_GROUP)
