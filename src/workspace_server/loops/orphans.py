"""Orphan sweeper: instances we manage whose workspace row is removed or gone (spec 02 §2, 03 §5).

Runs at start and then every `ORPHAN_SWEEP_INTERVAL` (60 s), only with a backend, within a 30 s
budget per pass. An instance counts as ours only when it carries our workspace label
(`molecule.workspace.id`); unlabelled containers — even `ws-<hex>` ones — are never touched. For a
labelled instance whose row is `removed` or missing (a wiped database): stop it, and only if the stop
succeeded remove its config volumes (a failed stop means it may still use them). The workspace volume
is user data and is kept. No events.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from workspace_server.context import AppContext
from workspace_server.provisioner import store as pstore
from workspace_server.provisioner.base import Backend, BackendError, Instance
from workspace_server.workspaces.status import Status

log = logging.getLogger(__name__)

PASS_BUDGET_SECONDS = 30.0


async def sweep_orphans(ctx: AppContext, backend: Backend | None = None) -> list[str]:
    """One pass; returns the workspace ids whose instance was reaped."""
    if backend is None:
        backend = ctx.orchestrator.backend if ctx.orchestrator is not None else None
    if backend is None:
        return []
    reaped: list[str] = []
    try:
        async with asyncio.timeout(PASS_BUDGET_SECONDS):
            try:
                instances = [i for i in await backend.list_instances() if i.workspace_id]
            except BackendError as exc:  # the engine away (restarting): nothing to sweep this pass
                log.warning(
                    "orphan sweep: listing instances failed (%s); next pass", exc.detail or exc.message
                )
                return []
            statuses = await _statuses(ctx, instances)
            for inst in instances:
                ws_id = str(inst.workspace_id)
                if statuses.get(ws_id, Status.REMOVED) != Status.REMOVED:
                    continue
                if await _reap(backend, inst, ws_id):
                    reaped.append(ws_id)
    except TimeoutError:
        log.warning("orphan sweep: pass budget of %.0fs used up; the rest waits", PASS_BUDGET_SECONDS)
    return reaped


async def _statuses(ctx: AppContext, instances: list[Instance]) -> dict[str, str]:
    async with ctx.engine.connect() as conn:
        return await pstore.statuses_of(conn, [str(i.workspace_id) for i in instances])


async def _reap(backend: Any, inst: Instance, ws_id: str) -> bool:
    try:
        await backend.stop(ws_id)
    except Exception:
        log.warning("orphan sweep: stopping %s failed; volumes kept", inst.name, exc_info=True)
        return False
    try:
        await backend.remove_volumes(ws_id)
    except Exception:
        log.warning("orphan sweep: removing volumes of %s failed", inst.name, exc_info=True)
    log.info("orphan sweep: reaped %s (workspace %s)", inst.name, ws_id)
    return True
