"""Application factory: settings in, FastAPI app out."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from workspace_server.common.errors import (
    ApiError,
    api_error_response,
    backing_store_down,
    client_gone_response,
    http_error_response,
    store_error_classes,
    unavailable_response,
    unhandled_response,
)
from workspace_server.common.kv import KV, MemoryKV, RedisKV
from workspace_server.common.routing import HotRoute
from workspace_server.common.tasks import TaskSupervisor
from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.db.engine import make_engine
from workspace_server.db.migrate import upgrade_to_head
from workspace_server.egress.clients import guarded_http_client
from workspace_server.egress.policy import policy_for
from workspace_server.events.bus import Bus, InProcessBus, RedisBus
from workspace_server.events.hub import Hub
from workspace_server.events.service import EventService
from workspace_server.workspaces.lifecycle import Lifecycle

log = logging.getLogger(__name__)

OPEN_BOOTSTRAP_WARNING = (
    "open bootstrap mode (neither ADMIN_TOKEN nor MOLECULE_ENV=production is set): a workspace without a "
    "token is reachable without a credential and the first POST /registry/register for it receives its "
    "token; set ADMIN_TOKEN before exposing this server"
)
# at shutdown, how long background work (queue drains, A2A side effects, restarts) may take to finish
SHUTDOWN_DEADLINE = 5.0
WARM_POOL_GROUP = "warm-pool"


async def build_context(settings: Settings, *, migrate: bool = True) -> AppContext:
    """`migrate=False` when the caller already migrated (`workspace-server serve` does, before it binds)."""
    from workspace_server.secrets.crypto import init_strict

    init_strict(settings)  # production without a valid SECRETS_ENCRYPTION_KEY: refuse before touching the DB
    if settings.open_bootstrap:
        log.warning(OPEN_BOOTSTRAP_WARNING)
    engine = make_engine(settings.DATABASE_URL)
    tasks = TaskSupervisor()
    if migrate:
        await upgrade_to_head(engine)
    from workspace_server.secrets.atrest import prepare as prepare_secrets

    try:  # the secrets key (generated on first start), then plaintext rows encrypted under it
        await prepare_secrets(settings, engine)
    except BaseException:
        await engine.dispose()
        raise
    redis: Any | None = None
    bus: Bus
    kv: KV
    if settings.REDIS_URL:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.REDIS_URL)
        await redis.ping()
        bus, kv = RedisBus(redis, tasks), RedisKV(redis)
    else:
        bus, kv = InProcessBus(), MemoryKV()
    await bus.start()
    return await _compose(settings, engine, tasks, bus, kv, redis)


async def _compose(
    settings: Settings, engine: AsyncEngine, tasks: TaskSupervisor, bus: Bus, kv: KV, redis: Any | None
) -> AppContext:
    """The composition root: every long-lived part of the app, built here and nowhere else."""
    from workspace_server import authz
    from workspace_server.a2a import make_parts as make_a2a_parts
    from workspace_server.auth.ratelimit import FixedWindowLimiter
    from workspace_server.channels.state import ChannelsState
    from workspace_server.egress.policy import Assigned
    from workspace_server.mcp.routes import WINDOW_SECONDS as MCP_WINDOW_SECONDS
    from workspace_server.plugins.service import make_source_registry
    from workspace_server.registry.batch import HeartbeatBatcher
    from workspace_server.tokens.service import MINT_INTERVAL, MINT_RATE

    events = EventService(engine, bus)
    ctx = AppContext(
        settings=settings,
        engine=engine,
        bus=bus,
        events=events,
        lifecycle=Lifecycle(engine, events),
        kv=kv,
        hub=Hub(bus),
        http=guarded_http_client(policy_for(settings), httpx.Timeout(10.0, connect=5.0)),
        tasks=tasks,
        a2a=make_a2a_parts(bus, kv),
        egress_assigned=Assigned(),
        transcript_http=httpx.AsyncClient(trust_env=False),
        mint_limiter=FixedWindowLimiter(MINT_RATE, MINT_INTERVAL),
        mcp_limiter=FixedWindowLimiter(settings.MCP_RATE_LIMIT, MCP_WINDOW_SECONDS),
        plugin_sources=make_source_registry(settings),
        channels=ChannelsState(),
        redis=redis,
    )
    ctx.a2a.log_writer.bind(ctx)
    if engine.dialect.name == "postgresql":  # heartbeats in flight share one statement (registry/batch.py)
        strict = authz.heartbeat_batch_strict(settings)
        ctx.heartbeat_batcher = HeartbeatBatcher(ctx.autocommit, strict=strict, tasks=tasks)
    await _install_orchestrator(ctx)
    return ctx


async def _install_orchestrator(ctx: AppContext) -> None:
    """The workspace backend and the orchestrator over it (provisioner/orchestrator.py)."""
    from workspace_server.provisioner import make_backend
    from workspace_server.provisioner.hooks import default_mutators
    from workspace_server.provisioner.orchestrator import Orchestrator

    backend = await make_backend(ctx.settings)
    orch = Orchestrator(ctx, backend, default_mutators(ctx.settings))
    ctx.orchestrator = orch
    if backend is not None:
        ctx.backend = backend
        ctx.provisioner = orch
        ctx.restart_hook = orch.restart_by_id
        orch.spawn(orch.adopt_instances(), "adopt-instances")  # starts cut short by a crash
        # per engine, so on every replica (claims are atomic on the engine, provisioner/docker/pool.py); a
        # daemon that close_context cancels first: it never finishes, so the drain would wait it out
        ctx.tasks.spawn("warm-pool", backend.run_warm_pool(), group=WARM_POOL_GROUP, daemon=True)


async def close_context(ctx: AppContext) -> None:
    """Stop the background work (drained until SHUTDOWN_DEADLINE, then cancelled), then close every part."""
    from workspace_server.a2a import shutdown as shutdown_a2a
    from workspace_server.registry.service import shutdown as shutdown_registry

    await ctx.tasks.cancel(WARM_POOL_GROUP)  # members stay up: the next start adopts them
    await ctx.tasks.shutdown(SHUTDOWN_DEADLINE)
    await shutdown_registry(ctx)
    await shutdown_a2a(ctx)
    await ctx.transcript_http.aclose()
    orch = ctx.orchestrator
    if orch is not None and orch.backend is not None:
        await orch.backend.close()
    ctx.hub.close()
    await ctx.bus.close()
    await ctx.http.aclose()
    if ctx.redis is not None:
        await ctx.redis.aclose()
    await ctx.engine.dispose()


# Net container allocations between two young-generation collections (CPython's default: 700). A request
# leaves a few dozen behind for a while (scope, messages, coroutines, futures: freed by reference counting
# once it ends), so at 700 the collector ran every ~20 heartbeats, mostly to find nothing. In a
# bench/heartbeat.py run (~20k requests) the time spent collecting fell from 0.60 s to 0.19 s, for ~2 MB
# more RSS (bench/README.md, session 5).
GC_YOUNG_THRESHOLD = 10_000


def create_app(
    settings: Settings | None = None, *, run_loops: bool = True, migrate: bool = True, freeze_gc: bool = False
) -> FastAPI:
    """`freeze_gc`: once started, move every object that exists then (modules, routes, models, compiled
    statements, pools: they live as long as the process) out of the cyclic collector's reach, so each full
    collection scans only what requests create. About a quarter of the CPU of a proxied A2A call was the
    collector re-scanning ~200k start-up objects (bench/README.md). It also raises the young generation's
    threshold (GC_YOUNG_THRESHOLD). `serve` sets it; tests, which build many apps in one process, do not
    (frozen cycles are never collected)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from workspace_server.loops.supervisor import start_loops

        ctx = await build_context(settings, migrate=migrate)
        from workspace_server.a2a import install as install_a2a

        await install_a2a(ctx)
        app.state.ctx = ctx
        loops = start_loops(ctx) if run_loops else None
        if freeze_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            if loops is not None:
                await loops.stop()
            await close_context(ctx)

    # /openapi.json and /docs are served by workspace_server.openapi (open routes, docs/decisions.md)
    app = FastAPI(
        title="workspace-server",
        version="0.1.0",
        lifespan=lifespan,
        redirect_slashes=True,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI's OpenTelemetry probe reads os.environ on every request (~7 % of a heartbeat); we export
        # Prometheus metrics instead
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    _install_error_handlers(app)
    hot = _include_routers(app)
    from workspace_server.proxy.routes import install as install_proxies

    install_proxies(app, settings)  # /cp/* upstream check and the canvas as the NoRoute fallback
    from workspace_server.openapi import install as install_openapi

    install_openapi(app)

    from workspace_server.middleware import install_middleware

    install_middleware(app, settings, hot)
    return app


def _include_routers(app: FastAPI) -> list[HotRoute]:
    """Every router; returns the hot routes (common/routing.py), which the hot lane serves too."""
    from workspace_server.a2a.routes import HOT_ROUTES as A2A_HOT
    from workspace_server.a2a.routes import router as a2a_router
    from workspace_server.activity.extra_routes import router as activity_extra_router
    from workspace_server.activity.routes import router as activity_router
    from workspace_server.agents.routes import router as agents_router
    from workspace_server.approvals.routes import router as approvals_router
    from workspace_server.audit.routes import router as audit_router
    from workspace_server.bundles.routes import router as bundles_router
    from workspace_server.channels.routes import router as channels_router
    from workspace_server.chatfiles.routes import router as chatfiles_router
    from workspace_server.checkpoints.routes import router as checkpoints_router
    from workspace_server.events.routes import router as events_router
    from workspace_server.files.routes import router as files_router
    from workspace_server.instructions.routes import router as instructions_router
    from workspace_server.kvmemory.routes import router as kvmemory_router
    from workspace_server.loops.routes import router as loops_router
    from workspace_server.mcp.routes import router as mcp_router
    from workspace_server.memories.routes import router as memories_router
    from workspace_server.observability.routes import router as observability_router
    from workspace_server.orgs.routes import router as orgs_router
    from workspace_server.plugins.routes import router as plugins_router
    from workspace_server.provisioner.routes import router as provisioner_router
    from workspace_server.proxy.routes import router as proxy_router
    from workspace_server.registry.routes import HOT_ROUTES as REGISTRY_HOT
    from workspace_server.registry.routes import router as registry_router
    from workspace_server.schedules.routes import router as schedules_router
    from workspace_server.secrets.routes import router as secrets_router
    from workspace_server.templates.routes import router as templates_router
    from workspace_server.terminal.routes import router as terminal_router
    from workspace_server.tokens.routes import router as tokens_router
    from workspace_server.webhooks.routes import router as webhooks_router
    from workspace_server.workspaces.lifecycle_routes import router as lifecycle_router
    from workspace_server.workspaces.routes import router as workspaces_router

    hot = [*REGISTRY_HOT, *A2A_HOT]
    app.router.routes[0:0] = hot  # matched first, without dependency injection
    for r in (
        observability_router,
        workspaces_router,
        lifecycle_router,
        agents_router,
        provisioner_router,
        registry_router,
        tokens_router,
        events_router,
        activity_router,
        bundles_router,
        loops_router,
        a2a_router,
        secrets_router,
        mcp_router,
        instructions_router,
        memories_router,
        schedules_router,
        webhooks_router,
        channels_router,  # after webhooks_router: the static /webhooks/github wins over /webhooks/{type}
        kvmemory_router,
        approvals_router,
        checkpoints_router,
        audit_router,
        activity_extra_router,
        chatfiles_router,
        files_router,
        templates_router,
        terminal_router,
        orgs_router,
        plugins_router,
        proxy_router,
    ):
        app.include_router(r)
    return hot


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, __: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid request body"}, status_code=400)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        return client_gone_response(request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_error_response(exc)

    def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        method = request.scope.get("method", "WEBSOCKET")  # a WebSocket route's errors come here too
        log.warning("%s %s: datastore unavailable (%s)", method, request.url.path, type(exc).__name__)
        return unavailable_response()

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        """The database or Redis away, answered here rather than by the catch-all below: an exception that
        reaches Starlette's outermost error middleware is re-raised after its response, and uvicorn then
        closes the connection — resetting the client's next request on it."""
        if not backing_store_down(exc):
            raise exc
        return _unavailable(request, exc)

    for cls in store_error_classes():
        app.add_exception_handler(cls, _store_down)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        return unhandled_response(request.method, request.url.path, exc)
