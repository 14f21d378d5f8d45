"""The process-wide objects a request or loop needs, built once at start-up and passed around."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from workspace_server.common.kv import KV
from workspace_server.common.tasks import TaskSupervisor
from workspace_server.config import Settings
from workspace_server.db.engine import autocommit
from workspace_server.events.bus import Bus
from workspace_server.events.service import EventService
from workspace_server.workspaces.lifecycle import Lifecycle

if TYPE_CHECKING:
    from workspace_server.a2a.caches import QueueHint, TargetCache
    from workspace_server.a2a.call import ProxyResult
    from workspace_server.a2a.logwriter import LogWriter
    from workspace_server.a2a.pool import IdleWatch
    from workspace_server.a2a.transport import AgentClient
    from workspace_server.auth.ratelimit import FixedWindowLimiter
    from workspace_server.channels.state import ChannelsState
    from workspace_server.egress.policy import Assigned
    from workspace_server.events.hub import Hub
    from workspace_server.loops.supervisor import Loops
    from workspace_server.plugins.sources import SourceRegistry
    from workspace_server.provisioner.base import Backend
    from workspace_server.provisioner.orchestrator import Orchestrator
    from workspace_server.registry.batch import HeartbeatBatcher
    from workspace_server.schedules.scheduler import Scheduler
    from workspace_server.workspaces.service.base import ProvisionerHook

# Hooks a lower layer calls into a higher one; set by the composition root (app.py) when there is one.
RestartHook = Callable[[str], Awaitable[object]]  # restart a workspace by id (Orchestrator.restart_by_id)
QueueDrain = Callable[[str], object]  # after a heartbeat with spare capacity; may return an awaitable


class A2AProxy(Protocol):
    """In-process senders (cron, channels, webhooks, restart context): `await ctx.a2a.proxy(target_id,
    body, caller, log_activity)`; callers use `system:`/`webhook:`/`channel:` ids or ""."""

    def __call__(
        self, target_id: str, body: bytes, caller_id: str = ..., log_activity: bool = ..., /
    ) -> Awaitable[ProxyResult]: ...


@dataclass
class A2AParts:
    """The A2A proxy's long-lived parts (a2a/), built by `a2a.make_parts` in the composition root."""

    idle_watch: IdleWatch  # one bus listener: the time of the last event per workspace in dispatch
    target_cache: TargetCache  # target rows, shared between concurrent calls; dropped on WORKSPACE_* events
    url_cache: TargetCache  # the same for the targets' URLs read from ctx.kv (Redis with replicas)
    queue_hint: QueueHint  # which workspaces' queues were seen empty lately
    log_writer: LogWriter  # batched `a2a_receive` rows
    proxy: A2AProxy | None = None  # set by `a2a.install`
    client: AgentClient | None = None  # the pool for agent-supplied URLs (egress-guarded)
    trusted_client: AgentClient | None = None  # the pool for URLs our backend assigned
    draining: set[str] = field(default_factory=set)  # workspaces whose queue this process is draining


@dataclass
class AppContext:
    """The application's parts, each built once by the composition root (app.py `build_context`)."""

    settings: Settings
    engine: AsyncEngine
    bus: Bus
    events: EventService
    lifecycle: Lifecycle
    kv: KV
    hub: Hub
    http: httpx.AsyncClient
    tasks: TaskSupervisor  # every background task (common/tasks.py)
    a2a: A2AParts
    egress_assigned: Assigned  # the addresses our backends started agents at (egress.assigned)
    transcript_http: httpx.AsyncClient  # plain client for server-assigned agent URLs (activity/transcript)
    mint_limiter: FixedWindowLimiter  # POST /org/tokens, per IP
    mcp_limiter: FixedWindowLimiter  # the MCP bridge, per workspace
    plugin_sources: SourceRegistry  # `local`, `github` plugin resolvers
    channels: ChannelsState  # the Telegram pollers and the channel manager's wake-up (channels/)
    heartbeat_batcher: HeartbeatBatcher | None = None  # Postgres only (registry/batch.py)
    redis: Any | None = None
    # the workspace backend (docker or process), or None (WORKSPACE_BACKEND=none, no engine)
    backend: Backend | None = None
    orchestrator: Orchestrator | None = None  # always set at start-up; its backend may be None
    provisioner: ProvisionerHook | None = None  # the orchestrator, only with a backend (workspaces service)
    restart_hook: RestartHook | None = None  # the orchestrator's restart_by_id, only with a backend
    queue_drain: QueueDrain | None = None  # the A2A queue's drain_one (a2a.install)
    loops: Loops | None = None  # the running loops (start_loops): operators' tooling and tests
    scheduler: Scheduler | None = None  # the cron scheduler, when SCHEDULER_INTERVAL > 0
    loop_ticks: dict[str, datetime] = field(default_factory=dict)  # loop -> last iteration (liveness)
    session_cache: dict[bytes, tuple[bool, float]] = field(default_factory=dict)  # auth/session verdicts
    workspace_config_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # workspace_config merges
    # workspace id -> capabilities/idle timeout reported on the last heartbeat (spec 04 §0)
    runtime_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @cached_property
    def autocommit(self) -> AsyncEngine:
        """The engine's pool in AUTOCOMMIT mode, for single-statement hot paths (heartbeats, token checks)."""
        return autocommit(self.engine)


async def get_ctx(request: HTTPConnection) -> AppContext:
    # async on purpose: FastAPI runs a plain `def` dependency in the thread pool, a hop per request
    ctx: AppContext = request.app.state.ctx
    return ctx
