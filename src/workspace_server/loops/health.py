"""Health sweep: a live workspace whose instance is gone goes offline and is restarted (spec 03 §5).

Every `HEALTH_SWEEP_INTERVAL` (15 s), only with a backend. Candidates are online/degraded rows whose
agent we run (not `external`). `is_running` False → offline (guarded: only from online/degraded, so a
row paused or restarted meanwhile is left alone), cache keys cleared, `WORKSPACE_OFFLINE {}`, then
`restart_by_id` in the background; the row is online again once the new agent registers. An
`is_running` error counts as running: a transient engine error must not restart a healthy workspace.
Each pass also gives a live row whose instance runs, but whose url is not the one our backend assigned,
the instance's url (`Orchestrator.adopt_instances`): a container the engine revived by itself while a
restart was clearing the row's url registers its own loopback url, which the A2A proxy refuses.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from workspace_server.common.kv import clear_workspace_keys
from workspace_server.context import AppContext
from workspace_server.provisioner import store as pstore

if TYPE_CHECKING:
    from workspace_server.provisioner.orchestrator import Orchestrator

log = logging.getLogger(__name__)

RESTARTS_GROUP = "health-restart"  # the task supervisor group of the restarts the sweep starts


async def sweep_health(ctx: AppContext) -> list[str]:
    """One pass; returns the ids moved offline."""
    orch = ctx.orchestrator
    if orch is None or orch.backend is None:
        return []
    async with ctx.engine.connect() as conn:
        rows = await pstore.backend_live_rows(conn)
    try:  # rows whose running instance's url is not the one on the row (see Orchestrator.adopt_instances)
        await orch.adopt_instances()
    except Exception:
        log.exception("health sweep: adopting instance urls failed")
    offline: list[str] = []
    for row in rows:
        try:
            if await orch.is_running(row.id):
                continue
            if await _mark_offline(ctx, row.id):
                offline.append(row.id)
                _restart(ctx, orch, row.id)
        except Exception:  # one bad row must not starve the others
            log.exception("health sweep: checking %s failed", row.id)
    return offline


async def _mark_offline(ctx: AppContext, ws_id: str) -> bool:
    changed = await ctx.lifecycle.mark_offline(ws_id)
    if changed:
        log.info("health sweep: instance of %s is not running; offline, restarting", ws_id)
        try:
            await clear_workspace_keys(ctx.kv, ws_id)
        except Exception:
            log.warning("clearing cache keys of %s failed", ws_id, exc_info=True)
    return changed


def _restart(ctx: AppContext, orch: Orchestrator, ws_id: str) -> None:
    ctx.tasks.spawn(f"health-restart:{ws_id}", _run(orch, ws_id), group=RESTARTS_GROUP)


async def _run(orch: Orchestrator, ws_id: str) -> None:
    try:
        await orch.restart_by_id(ws_id)
    except Exception:
        log.exception("auto-restart of %s failed", ws_id)


async def cancel_health_restarts(ctx: AppContext) -> None:
    await ctx.tasks.cancel(RESTARTS_GROUP)
