"""Provision-timeout sweep: workspaces stuck in provisioning become failed (spec 03 §5, spec 01 §1.3).

Timeout per row: `PROVISION_TIMEOUT_SECONDS` when set; else the template's
`runtime_config.provision_timeout_seconds` for the row's runtime (DECIDE: the reference only showed that
value to the canvas, so a slow runtime whose template asked for more time was failed at 10 min anyway);
else 30 min for hermes; else 10 min. Age is measured from `updated_at`, re-checked in the same UPDATE.
A row it fails loses its instance, if the backend has one (volumes are kept).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.db.schema import workspaces
from workspace_server.loops.store import Candidate, provisioning_workspaces
from workspace_server.workspaces.templates import provision_timeout_seconds_for

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600
HERMES_TIMEOUT = 1800
TIMEOUT_MESSAGE = (
    "provisioning timed out — container started but never called /registry/register. "
    "Check container logs and network connectivity to the platform."
)


async def timeout_for(ctx: AppContext, runtime: str) -> int:
    override = ctx.settings.provision_timeout_override
    if override is not None:
        return override
    from_template = await provision_timeout_seconds_for(ctx.settings, runtime)
    if from_template:
        return from_template
    return HERMES_TIMEOUT if runtime == "hermes" else DEFAULT_TIMEOUT


async def sweep_provision_timeouts(ctx: AppContext) -> list[str]:
    """One pass; returns the ids moved to failed."""
    now = utcnow()
    timeouts: dict[str, int] = {}  # one template lookup per runtime per pass
    failed: list[str] = []
    for cand in await provisioning_workspaces(ctx):
        if cand.runtime not in timeouts:
            timeouts[cand.runtime] = await timeout_for(ctx, cand.runtime)
        timeout = timeouts[cand.runtime]
        cutoff = now - timedelta(seconds=timeout)
        if cand.updated_at is None or cand.updated_at > cutoff:
            continue
        try:
            if await _fail(ctx, cand, timeout, cutoff):
                failed.append(cand.id)
        except Exception:  # one bad row must not starve the others
            log.exception("provision-timeout sweep: could not fail %s", cand.id)
    return failed


async def _fail(ctx: AppContext, cand: Candidate, timeout_secs: int, cutoff: datetime) -> bool:
    changed = await ctx.lifecycle.mark_failed(
        cand.id,
        TIMEOUT_MESSAGE,
        {
            "error": TIMEOUT_MESSAGE,
            "timeout_secs": timeout_secs,
            "runtime": cand.runtime,
            "source": "provision_timeout_sweep",
        },
        guard=workspaces.c.updated_at <= cutoff,
    )
    if changed:
        log.warning("workspace %s (%s) provisioning timed out after %ds", cand.id, cand.runtime, timeout_secs)
        await _stop_instance(ctx, cand.id)
    return changed


async def _stop_instance(ctx: AppContext, ws_id: str) -> None:
    """A failed workspace keeps no instance (as a failed start does): one its start left behind — a
    server killed mid-create, an agent that never registered — would otherwise stay, unseen by the orphan
    sweep (the row is not removed). Volumes are kept: a restart reuses them."""
    orch = ctx.orchestrator
    if orch is None or orch.backend is None:
        return
    try:
        await orch.stop(ws_id)
    except Exception:
        log.warning("provision-timeout sweep: stopping the instance of %s failed", ws_id, exc_info=True)
