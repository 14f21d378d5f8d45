"""The orchestrator's shared state and plumbing: per-workspace locks, background work, the row and cache
helpers every step uses, and the agents' addresses (which the backend answers). The steps compose on it:
provision_run.py (one provision run), restarts.py (restarts and adoption), orchestrator.py (the rest)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from workspace_server.common.errors import ApiError
from workspace_server.common.kv import clear_workspace_keys
from workspace_server.context import AppContext
from workspace_server.provisioner import store as pstore
from workspace_server.provisioner.base import Backend
from workspace_server.provisioner.hooks import MutatorRegistry
from workspace_server.provisioner.runtimes import RuntimeImages
from workspace_server.workspaces import store as ws_store
from workspace_server.workspaces.status import Status

log = logging.getLogger(__name__)

TASKS_GROUP = "orchestrator"  # the task supervisor group of its background work
NOT_PAUSABLE = "workspace not found or already paused"
NOT_PAUSED = "workspace not found or not paused"
NOT_HIBERNATABLE = "workspace not found or not in a hibernatable state (must be online or degraded)"
NO_PROVISIONER = "provisioner not available"
EXTERNAL_RESTART = "external workspaces run outside this server — restart the agent itself"
# statuses a restart may not take a row out of (hibernated is allowed: that is the wake)
NO_AUTO_RESTART = (Status.REMOVED, Status.PAUSED, Status.HIBERNATING)


class OrchestratorBase:
    def __init__(
        self, ctx: AppContext, backend: Backend | None, mutators: MutatorRegistry | None = None
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.engine = ctx.engine
        self.backend = backend
        self.mutators = mutators
        self.images = RuntimeImages.from_settings(ctx.settings)
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: set[str] = set()  # workspaces with a restart_by_id waiting for the lock

    # ------------------------------------------------------------ plumbing

    def _lock(self, ws_id: str) -> asyncio.Lock:
        return self._locks.setdefault(ws_id, asyncio.Lock())

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Background work on the app's task supervisor (drained, then cancelled, at shutdown); nobody
        awaits it, the supervisor logs a crash once with the task's name."""
        return self.ctx.tasks.spawn(name, coro, group=TASKS_GROUP)

    async def close(self) -> None:
        """Stop this orchestrator's background work now (the app's shutdown drains it first)."""
        await self.ctx.tasks.cancel(TASKS_GROUP)

    def _require_backend(self) -> Backend:
        if self.backend is None:
            raise ApiError(503, NO_PROVISIONER)
        return self.backend

    async def _row(self, ws_id: str) -> Any | None:
        try:
            async with self.engine.connect() as conn:
                return await ws_store.get_workspace(conn, ws_id)
        except Exception:
            log.exception("lookup of workspace %s failed", ws_id)
            raise ApiError(500, "lookup failed") from None

    async def _paused_ancestor(self, ws_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return await pstore.paused_ancestor(conn, ws_id)

    async def _fail(self, ws_id: str, message: str, **extra: Any) -> None:
        await self.ctx.lifecycle.mark_failed(ws_id, message, {"error": message, **extra})

    async def _clear_keys(self, ws_id: str) -> None:
        try:
            await clear_workspace_keys(self.ctx.kv, ws_id)
        except Exception:
            log.warning("clearing cache keys of %s failed", ws_id, exc_info=True)

    async def _stop_quietly(self, ws_id: str) -> bool:
        if self.backend is None:
            return True
        try:
            await self.backend.stop(ws_id)
        except Exception:
            log.warning("stop of %s failed; continuing", ws_id, exc_info=True)
            return False
        return True

    def platform_url(self, tier: int) -> str:
        """Where the agent reaches this server (DECIDE, docs/decisions.md § Orchestrator).

        PLATFORM_URL when set; else loopback for agents that share the host's network (the backend says:
        process agents, docker host networking, T4 host networking), else `host.docker.internal` (bridge
        containers, and no backend).
        """
        s = self.settings
        if s.PLATFORM_URL:
            return s.PLATFORM_URL.rstrip("/")
        if self.backend is not None and self.backend.shares_host_network(tier):
            host = s.HOST if s.HOST not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
            host = f"[{host}]" if ":" in host and not host.startswith("[") else host
            return f"http://{host}:{s.PORT}"
        return f"http://host.docker.internal:{s.PORT}"

    def _internal_url(self, ws_id: str, started_url: str, tier: int) -> str:
        """What peers on the agents' network dial, as the backend says (docker bridge: the container name)."""
        if self.backend is None:
            return started_url
        return self.backend.network_url(ws_id, started_url, tier)
