"""The orchestrator: turns workspace rows into running agents and back (spec 01 §4.2–4.4, 02 §1–2).

It owns the status moves of the provisioning life cycle and calls the backend, which knows nothing of
the database (DESIGN §7). One provision run:

    env (secrets → git identity → model → role → mutator chain) → config source → required_env
    preflight → token rotation → row still provisioning? → backend.start (3 min) → url stored + cached

The row goes `online` only when the agent registers. Every failure moves provisioning → failed with a
message safe to show (F1086) and `WORKSPACE_PROVISION_FAILED`.

Serialisation: one lock per workspace covers stop + start, so two starts never race for one
workspace. `restart_by_id` (auto-restart, wake, secret change) queues at most one restart behind a
running one instead of dropping it. Pause/hibernate/delete do not take the lock (they must not wait
for a 3-minute start); they change the status first and stop after, and a start that finishes later
sees the row moved on and stops its own instance.

The class is composed along those seams: `orchestrator_base.py` (locks, background work, row/cache
helpers, the agents' addresses as the backend answers them), `provision_run.py` (one provision run),
`restarts.py` (restarts, the live config, adoption of unrecorded instances), and this module (the
workspaces service's hook, pause/resume, hibernate).

Set on the context by the composition root (app.py) as `ctx.orchestrator` (always), and — only with a
backend — as `ctx.provisioner` (the workspaces service's `ProvisionerHook`) and `ctx.restart_hook`
(= `restart_by_id`). Its background work runs on the app's task supervisor (`ctx.tasks`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from workspace_server.common.errors import ApiError
from workspace_server.provisioner import store as pstore
from workspace_server.provisioner.orchestrator_base import NOT_HIBERNATABLE, NOT_PAUSABLE, NOT_PAUSED
from workspace_server.provisioner.provision_run import Job, _job_from_row, git_identity
from workspace_server.provisioner.restarts import Restarts
from workspace_server.workspaces import store as ws_store
from workspace_server.workspaces.schemas import ProvisionSpec
from workspace_server.workspaces.status import Status

log = logging.getLogger(__name__)

__all__ = ["NOT_HIBERNATABLE", "NOT_PAUSABLE", "NOT_PAUSED", "Job", "Orchestrator", "git_identity"]


class Orchestrator(Restarts):
    # ------------------------------------------------------------ ProvisionerHook (workspaces service)

    async def provision(self, spec: ProvisionSpec) -> None:
        """Create path: the row is `provisioning`; start it from the template or a generated config."""
        job = Job(
            ws_id=spec.workspace_id,
            name=spec.name,
            role=spec.role,
            tier=spec.tier,
            runtime=spec.runtime,
            model=spec.model,
            template_dir=spec.template_path,
            generate=spec.template_path is None,
            workspace_dir=spec.workspace_dir,
            workspace_access=spec.workspace_access,
            overlay=spec.overlay,
        )
        if spec.template:
            await self._remember_template(spec.workspace_id, spec.template)
        async with self._lock(job.ws_id):
            await self._run(job)

    async def _remember_template(self, ws_id: str, template: str) -> None:
        """`workspace_config.template` (as the no-backend create writes it): an empty volume's recovery
        source, so a create that failed before its first start still gets its template later."""
        lock = self.ctx.workspace_config_lock
        try:
            async with lock, self.engine.begin() as conn:
                await ws_store.merge_config(conn, ws_id, {"template": template})
        except Exception:
            log.warning("recording the template of %s failed", ws_id, exc_info=True)

    async def stop(self, ws_id: str) -> None:
        """Delete path: raises when the instance may still be alive (the caller keeps its volumes)."""
        if self.backend is not None:
            await self.backend.stop(ws_id)

    async def remove_volume(self, ws_id: str) -> None:
        if self.backend is not None:
            await self.backend.remove_volumes(ws_id)

    async def purge_volumes(self, ws_id: str) -> None:
        """`purge=true`: the workspace volume goes too (a plain delete keeps the user's data)."""
        if self.backend is not None:
            await self.backend.remove_volumes(ws_id, workspace=True)

    async def is_running(self, ws_id: str) -> bool:
        """For the A2A proxy: a backend error counts as running (a False triggers a restart)."""
        if self.backend is None:
            return True
        try:
            return await self.backend.is_running(ws_id)
        except Exception:
            log.warning("is_running(%s) failed; assuming running", ws_id, exc_info=True)
            return True

    # ------------------------------------------------------------ pause / resume

    async def pause(self, ws_id: str) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status in (Status.REMOVED, Status.PAUSED):
            raise ApiError(404, NOT_PAUSABLE)
        async with self.engine.connect() as conn:
            below = await pstore.descendants_where(
                conn, ws_id, (Status.REMOVED, Status.PAUSED), include=False
            )
        count = 0
        for wid, name in [(ws_id, row.name), *below]:
            # status first, stop second: a start finishing in between sees `paused` and stops itself
            changed = await self.ctx.lifecycle.transition(
                wid, to=Status.PAUSED, not_in=(Status.REMOVED, Status.PAUSED), values={"url": ""}
            )
            await self._stop_quietly(wid)
            await self._clear_keys(wid)
            if changed:
                count += 1
                await self.ctx.events.record("WORKSPACE_PAUSED", wid, {"name": name})
        return {"paused_count": count, "status": "paused"}

    async def resume(self, ws_id: str) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status != Status.PAUSED:
            raise ApiError(404, NOT_PAUSED)
        self._require_backend()
        parent = await self._paused_ancestor(ws_id)
        if parent is not None:
            raise ApiError(409, f'parent workspace "{parent}" is paused — resume it first')
        async with self.engine.connect() as conn:
            below = await pstore.descendants_where(conn, ws_id, (Status.PAUSED,), include=True)
            rows = [row] + [r for wid, _ in below if (r := await ws_store.get_workspace(conn, wid))]
        count = 0
        for r in rows:
            if (r.runtime or "") == "external":
                # DECIDE: nothing of ours to start; offline until the agent's next heartbeat revives it
                count += await self.ctx.lifecycle.transition(r.id, to=Status.OFFLINE, expect=[Status.PAUSED])
                continue
            changed = await self.ctx.lifecycle.transition(
                r.id,
                to=Status.PROVISIONING,
                expect=[Status.PAUSED],
                event="WORKSPACE_PROVISIONING",
                payload={"name": r.name, "tier": r.tier, "runtime": r.runtime},
            )
            if changed:
                count += 1
                self.spawn(self._resume_job(r), f"resume-{r.id}")
        return {"resumed_count": count, "status": "provisioning"}

    async def _resume_job(self, row: Any) -> None:
        async with self._lock(row.id):
            live = await self.read_live_config(row.id)
            job = _job_from_row(
                row, live_config=live.content, volume_known_empty=live.known and live.content is None
            )
            await self._run(job)

    # ------------------------------------------------------------ hibernate

    async def hibernate(self, ws_id: str, force: bool) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status not in (Status.ONLINE, Status.DEGRADED):
            raise ApiError(404, NOT_HIBERNATABLE)
        if row.active_tasks > 0 and not force:
            raise ApiError(
                409,
                "workspace has active tasks; use ?force=true to terminate them",
                active_tasks=row.active_tasks,
            )
        if row.active_tasks > 0:
            log.warning("force-hibernating %s with %d active tasks", ws_id, row.active_tasks)
        if not await self.hibernate_workspace(ws_id, force=force):
            # BUG fix: the reference answered 200 although its claim changed nothing
            raise ApiError(404, NOT_HIBERNATABLE)
        return {"status": "hibernated"}

    async def hibernate_workspace(
        self, ws_id: str, *, force: bool = False, idle_before: datetime | None = None
    ) -> bool:
        """Atomic claim → stop → hibernated. False when the claim lost (nothing stopped)."""
        claimed = await self.ctx.lifecycle.transition(
            ws_id,
            to=Status.HIBERNATING,
            expect=(Status.ONLINE, Status.DEGRADED),
            guard=pstore.hibernation_guard(force=force, idle_before=idle_before),
        )
        if not claimed:
            return False
        if not await self._stop_quietly(ws_id):
            # the instance may still run: give the row back rather than call it hibernated
            await self.ctx.lifecycle.transition(ws_id, to=Status.ONLINE, expect=[Status.HIBERNATING])
            raise ApiError(500, "failed to stop workspace — please retry")
        async with self.engine.connect() as conn:
            row = await ws_store.get_workspace(conn, ws_id)
        await self.ctx.lifecycle.transition(
            ws_id,
            to=Status.HIBERNATED,
            expect=[Status.HIBERNATING],
            values={"url": ""},
            event="WORKSPACE_HIBERNATED",
            payload={"name": row.name if row else ws_id, "tier": row.tier if row else 0},
        )
        await self._clear_keys(ws_id)
        return True
