"""Restarts (the route, and `restart_by_id` for auto-restart and wake), the live config read before a
stop, and the adoption of instances whose start was not recorded."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from workspace_server.common.errors import ApiError
from workspace_server.provisioner import config_source as cfg
from workspace_server.provisioner import restart_context
from workspace_server.provisioner import store as pstore
from workspace_server.provisioner.base import LiveConfig
from workspace_server.provisioner.orchestrator_base import EXTERNAL_RESTART, NO_AUTO_RESTART
from workspace_server.provisioner.provision_run import Job, ProvisionRun, _job_from_row
from workspace_server.workspaces import store as ws_store
from workspace_server.workspaces.status import Status

log = logging.getLogger(__name__)


class Restarts(ProvisionRun):
    # ------------------------------------------------------------ start-up adoption

    async def adopt_instances(self) -> list[str]:
        """A live or provisioning row whose instance runs but whose url is not the one our backend
        assigned gets the url back from the instance: the server that started it died between the start
        and the write (run once at start-up), or a restart cleared the url while the engine was away and
        the engine then revived the old container by itself (every health sweep pass). Without it the
        agent registers its own loopback url, which the A2A proxy refuses (only a url our backend
        assigned is trusted), so the workspace is online but unreachable. Returns the ids adopted.
        A backend that finds no url this way (process: it adopts its agents by pidfile) answers None."""
        if self.backend is None:
            return []
        locate = self.backend.instance_url
        async with self.engine.connect() as conn:
            rows = await pstore.rows_without_backend_url(conn)
        adopted: list[str] = []
        for row in rows:
            try:
                url = await locate(row.id)
            except Exception:
                log.warning("adoption: inspecting the instance of %s failed", row.id, exc_info=True)
                continue
            if not url:
                continue
            async with self.engine.begin() as conn:
                if not await pstore.adopt_url(conn, row.id, url):
                    continue
            await self._cache_urls(row.id, url, int(getattr(row, "tier", 0) or 0))
            log.info("adoption: workspace %s runs at %s (its start was not recorded)", row.id, url)
            adopted.append(row.id)
        return adopted

    # ------------------------------------------------------------ live config

    async def read_live_config(self, ws_id: str) -> LiveConfig:
        """The volume's config.yaml, read before a stop (the backend knows where: docker reads it from the
        running container, process from the config dir)."""
        if self.backend is None:
            return LiveConfig(False, None)
        return await self.backend.read_live_config(ws_id)

    # ------------------------------------------------------------ restart (route)

    async def restart(self, ws_id: str, body: cfg.RestartBody, reset_query: bool) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status == Status.REMOVED:  # DECIDE: a removed row stays removed (#73)
            raise ApiError(404, "workspace not found")
        parent = await self._paused_ancestor(ws_id)
        if parent is not None:
            raise ApiError(409, f'parent workspace "{parent}" is paused — resume it first')
        self._require_backend()
        if (row.runtime or "") == "external":
            raise ApiError(409, EXTERNAL_RESTART)
        live = await self.read_live_config(ws_id)
        runtime = await self._sync_runtime(row, live)
        template_dir, label = await asyncio.to_thread(
            cfg.resolve_restart_template, self.settings, row.name or "", runtime, body, self.images
        )
        reset = reset_query or body.reset
        snap = await restart_context.snapshot(self.ctx, ws_id, row.last_heartbeat_at)
        await self._to_provisioning(row, runtime, not_in=(Status.REMOVED, Status.HIBERNATING))
        job = _job_from_row(
            row,
            runtime=runtime,
            template_dir=template_dir,
            reset_session=reset,
            live_config=live.content,
            volume_known_empty=live.known and live.content is None,
        )
        self.spawn(self._restart_job(job, snap), f"restart-{ws_id}")
        return {"config_dir": label, "reset_session": reset, "status": "provisioning"}

    async def _sync_runtime(self, row: Any, live: LiveConfig) -> str:
        """The live config's `runtime:` wins over the DB (the Config tab may have changed it)."""
        runtime = row.runtime or "langgraph"
        declared = cfg.declared_runtime(live.content)
        if declared and declared != runtime:
            log.info("workspace %s: runtime %r → %r from its config.yaml", row.id, runtime, declared)
            try:
                async with self.engine.begin() as conn:
                    await pstore.set_runtime(conn, row.id, declared)
            except Exception:
                log.exception("saving the runtime of %s failed", row.id)
            runtime = declared
        return runtime

    async def _to_provisioning(
        self, row: Any, runtime: str, not_in: tuple[str, ...] = NO_AUTO_RESTART
    ) -> bool:
        """The route may take a paused or hibernated row back up; an auto-restart never a paused one."""
        changed = await self.ctx.lifecycle.transition(
            row.id,
            to=Status.PROVISIONING,
            not_in=not_in,
            values={"url": ""},
            event="WORKSPACE_PROVISIONING",
            payload={"name": row.name, "tier": row.tier, "runtime": runtime},
        )
        await self._clear_keys(row.id)
        return changed

    async def _restart_job(self, job: Job, snap: restart_context.RestartSnapshot | None) -> None:
        async with self._lock(job.ws_id):
            await self._stop_quietly(job.ws_id)
            # a run that held the lock before us may have brought the row online meanwhile
            await self.ctx.lifecycle.transition(
                job.ws_id,
                to=Status.PROVISIONING,
                not_in=(*NO_AUTO_RESTART, Status.HIBERNATED, Status.PROVISIONING),
                values={"url": ""},
                event="WORKSPACE_PROVISIONING",
                payload={"name": job.name, "tier": job.tier, "runtime": job.runtime},
            )
            await self._run(job)
        if snap is not None:
            await restart_context.send(self.ctx, job.ws_id, snap)

    # ------------------------------------------------------------ restart_by_id (auto / wake)

    async def restart_by_id(self, ws_id: str) -> None:
        """Auto-restart (offline, secret change) and wake (hibernated): reuse the volume, send context.

        Skips removed, paused and hibernating rows, external runtimes and rows under a paused ancestor.
        DECIDE/BUG fix: hibernated rows are accepted (the reference's query excluded them, so the
        wake on the next A2A call never happened). At most one restart waits behind a running one.
        """
        if self.backend is None or ws_id in self._queued:
            return
        self._queued.add(ws_id)
        try:
            async with self._lock(ws_id):
                self._queued.discard(ws_id)
                snap = await self._restart_locked(ws_id)
        finally:
            self._queued.discard(ws_id)
        if snap is not None:
            await restart_context.send(self.ctx, ws_id, snap)

    async def _restart_locked(self, ws_id: str) -> restart_context.RestartSnapshot | None:
        async with self.engine.connect() as conn:
            row = await ws_store.get_workspace(conn, ws_id)
            paused_parent = await pstore.paused_ancestor(conn, ws_id) if row is not None else None
        if row is None or row.status in NO_AUTO_RESTART or (row.runtime or "") == "external":
            return None
        if paused_parent is not None:
            return None
        log.info("auto-restart of %s (%s, was %s)", ws_id, row.name, row.status)
        live = await self.read_live_config(ws_id)
        snap = await restart_context.snapshot(self.ctx, ws_id, row.last_heartbeat_at)
        await self._stop_quietly(ws_id)
        if not await self._to_provisioning(row, row.runtime or "langgraph"):
            return None  # removed or paused meanwhile
        job = _job_from_row(
            row, live_config=live.content, volume_known_empty=live.known and live.content is None
        )
        await self._run(job)
        return snap
