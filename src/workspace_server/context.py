"""The process-wide objects a request or loop needs, built once at start-up and passed around."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from workspace_server.common.kv import KV
from workspace_server.config import Settings
from workspace_server.db.engine import autocommit
from workspace_server.events.bus import Bus
from workspace_server.events.service import EventService
from workspace_server.workspaces.lifecycle import Lifecycle

if TYPE_CHECKING:
    from workspace_server.events.hub import Hub
    from workspace_server.provisioner.base import Backend


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    bus: Bus
    events: EventService
    lifecycle: Lifecycle
    kv: KV
    hub: Hub
    http: httpx.AsyncClient
    redis: Any | None = None
    # workspace id -> capabilities/idle timeout reported on the last heartbeat (spec 04 §0)
    runtime_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> Backend | None:
        """The live workspace backend (docker or process), or None (WORKSPACE_BACKEND=none, no engine)."""
        backend: Backend | None = self.extras.get("backend")
        return backend

    @cached_property
    def autocommit(self) -> AsyncEngine:
        """The engine's pool in AUTOCOMMIT mode, for single-statement hot paths (heartbeats, token checks)."""
        return autocommit(self.engine)


async def get_ctx(request: HTTPConnection) -> AppContext:
    # async on purpose: FastAPI runs a plain `def` dependency in the thread pool, a hop per request
    ctx: AppContext = request.app.state.ctx
    return ctx
