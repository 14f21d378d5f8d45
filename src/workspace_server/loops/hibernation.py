"""Idle hibernation: a workspace that opted in is hibernated after a quiet spell (spec 01 §4.4).

Every `HIBERNATION_SWEEP_INTERVAL` (120 s, `<= 0` disables), only with a backend. Candidates: rows with
`hibernation_idle_minutes > 0`, status online/degraded, no active task, a runtime we run (not `external`),
and `idle_since` (set by the heartbeat when the agent reports no task, cleared when it reports one) older
than their window. The reference compared `last_heartbeat_at`, which every heartbeat refreshes, so a
live workspace never qualified (spec BUG; DECIDE: the idle-since time).

Each one goes through the orchestrator's hibernate: the atomic claim (re-checking no active task and
that it has been idle since before the cutoff, so a task that started meanwhile keeps it awake), stop,
`hibernated` with url '', WORKSPACE_HIBERNATED. The next A2A call wakes it (503 + Retry-After).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.provisioner import store as pstore

log = logging.getLogger(__name__)


async def sweep_idle_hibernation(ctx: AppContext) -> list[str]:
    """One pass; returns the ids hibernated."""
    orch = ctx.orchestrator
    if orch is None or orch.backend is None:
        return []
    now = utcnow()
    async with ctx.engine.connect() as conn:
        rows = await pstore.hibernation_candidates(conn)
    done: list[str] = []
    for row in rows:
        cutoff = now - timedelta(minutes=row.hibernation_idle_minutes)
        if row.idle_since > cutoff:
            continue
        try:
            if await orch.hibernate_workspace(row.id, idle_before=cutoff):
                log.info("hibernated %s after %d idle minutes", row.id, row.hibernation_idle_minutes)
                done.append(row.id)
        except Exception:  # one bad row must not starve the others
            log.exception("idle hibernation of %s failed", row.id)
    return done
