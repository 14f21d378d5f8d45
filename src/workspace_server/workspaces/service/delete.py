"""Delete: mark the workspace and its live descendants removed, then stop them, detached from the request."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from workspace_server.activity.service import sorted_keys
from workspace_server.auth import tokens
from workspace_server.common.errors import ApiError
from workspace_server.common.kv import clear_workspace_keys
from workspace_server.workspaces import store
from workspace_server.workspaces.service.base import ServiceBase

# The public face's logger name, for every part: log configuration and filters keep seeing one service.
log = logging.getLogger(__package__)

CONFIRM_MESSAGE = "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete."
DELETE_CLEANUP_SECONDS = 30.0


class DeleteOps(ServiceBase):
    async def delete(self, ws_id: str, *, confirm: bool, purge: bool) -> dict[str, Any]:
        try:
            async with self.engine.connect() as conn:
                children = await store.live_children(conn, ws_id)
                descendants = await store.live_descendants(conn, ws_id) if children else []
                exists = await store.workspace_exists(conn, ws_id)
        except Exception:
            log.exception("delete %s: child lookup failed", ws_id)
            raise ApiError(500, "failed to check children") from None
        if children and not confirm:
            conflict = ApiError(409, None)  # `status` is a body key here, so fill the body directly
            conflict.body.update(
                children=[{"id": cid, "name": cname} for cid, cname in children],
                children_count=len(children),
                message=CONFIRM_MESSAGE,
                status="confirmation_required",
            )
            raise conflict
        all_ids = [ws_id, *descendants]
        await self._mark_removed(all_ids)
        # Detached from the request: a client hanging up must not abort stops half-way (#1843).
        cleanup = self.ctx.tasks.spawn(
            f"delete-{ws_id}", self._cleanup(ws_id, descendants, exists, purge), awaited=True
        )
        failures = await asyncio.shield(cleanup)
        if failures:
            detail = "; ".join(f"stop {wid} failed" for wid in failures)
            raise ApiError(
                500,
                f"workspace marked removed, but {len(failures)} stop call(s) failed — please retry: {detail}",
                removed_count=len(all_ids),
                stop_failures=len(failures),
            )
        if purge:
            try:
                async with self.engine.begin() as conn:
                    await store.purge_workspaces(conn, all_ids)
            except Exception:
                log.exception("purge %s failed", all_ids)
                raise ApiError(500, "purge failed") from None
            return sorted_keys({"status": "purged", "cascade_deleted": len(descendants)})
        return sorted_keys({"status": "removed", "cascade_deleted": len(descendants)})

    async def _mark_removed(self, ids: list[str]) -> None:
        """Removed first, before any stop, so late heartbeats and sweeps cannot resurrect the rows (#73)."""
        try:
            async with self.engine.begin() as conn:
                for wid in ids:
                    await self.ctx.lifecycle.mark_removed(wid, conn=conn)
                await store.delete_layouts(conn, ids)
                await tokens.revoke_workspace_tokens(conn, ids)
                await store.disable_schedules(conn, ids)
        except Exception:
            log.exception("delete %s: marking removed failed", ids)
            raise ApiError(500, "failed to delete workspace") from None

    async def _cleanup(
        self, root: str, descendants: list[str], root_exists: bool, purge: bool = False
    ) -> list[str]:
        """Stop, clear caches, emit REMOVED: descendants first, then the root. Returns failed-stop ids."""
        deadline = asyncio.get_running_loop().time() + DELETE_CLEANUP_SECONDS
        failures: list[str] = []
        for wid in [*descendants, root]:
            if not await self._stop(wid, deadline, purge):
                failures.append(wid)
            try:
                await clear_workspace_keys(self.ctx.kv, wid)
            except Exception:
                log.exception("delete %s: clearing cache keys failed", wid)
            if wid != root:
                await self.ctx.events.record("WORKSPACE_REMOVED", wid, {})
            elif root_exists:
                await self.ctx.events.record("WORKSPACE_REMOVED", wid, {"cascade_deleted": len(descendants)})
        return failures

    async def _stop(self, ws_id: str, deadline: float, purge: bool = False) -> bool:
        hook = self.provisioner
        if hook is None:
            return True
        try:
            async with asyncio.timeout_at(deadline):
                await hook.stop(ws_id)
        except Exception:
            log.exception("delete %s: stop failed; volume left for the orphan sweeper", ws_id)
            return False
        # purge=true also drops the workspace volume (user data), when the hook can (`purge_volumes`)
        remove_volume = (purge and getattr(hook, "purge_volumes", None)) or getattr(
            hook, "remove_volume", None
        )
        if remove_volume is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await remove_volume(ws_id)
            except Exception:
                log.warning("delete %s: volume removal failed", ws_id, exc_info=True)
        return True
