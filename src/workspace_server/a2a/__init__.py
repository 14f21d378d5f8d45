"""Agent-to-agent messaging: the A2A proxy, its queue, delegation (spec 04 §1, §2).

The composition root (app.py) builds the A2A parts (`make_parts`: idle watch, target cache, queue hint,
log writer → `ctx.a2a`), then `install(ctx)` opens the connection pools and wires what other areas call:
- `ctx.queue_drain` (the registry calls it after a heartbeat with spare capacity),
- `ctx.a2a.proxy` (`await ctx.a2a.proxy(target_id, body, caller, log_activity)` for in-process
  senders such as cron, channels and webhooks; callers use `system:`/`webhook:`/`channel:` ids or "").
Background deliveries and logging run on the app's task supervisor, which drains them at shutdown;
`shutdown(ctx)` then flushes the log writer and closes the A2A connection pools.
"""

from __future__ import annotations

from functools import partial

from workspace_server.common.kv import KV
from workspace_server.context import A2AParts, AppContext
from workspace_server.events.bus import Bus, InProcessBus


def make_parts(bus: Bus, kv: KV) -> A2AParts:
    from workspace_server.a2a.caches import QueueHint, TargetCache
    from workspace_server.a2a.logwriter import LogWriter
    from workspace_server.a2a.pool import IdleWatch

    parts = A2AParts(
        idle_watch=IdleWatch(),
        target_cache=TargetCache(),
        url_cache=TargetCache(),
        # a bus that crosses processes means replicas, whose enqueues reach this process's hint only
        # through the shared cache (the queue epoch)
        queue_hint=QueueHint(None if isinstance(bus, InProcessBus) else kv),
        log_writer=LogWriter(),
    )
    bus.add_listener(parts.idle_watch.on_event)
    bus.add_listener(parts.target_cache.on_event)
    bus.add_listener(parts.url_cache.on_event)
    return parts


async def install(ctx: AppContext) -> None:
    """Ready the proxy; the activity journal restores what a process that died left in it."""
    from workspace_server.a2a import queue
    from workspace_server.a2a.pool import a2a_client
    from workspace_server.a2a.proxy import proxy_a2a

    await ctx.a2a.log_writer.start()
    a2a_client(ctx)
    queue.install(ctx)
    ctx.a2a.proxy = partial(proxy_a2a, ctx)


async def shutdown(ctx: AppContext) -> None:
    from workspace_server.a2a.logwriter import close_writer
    from workspace_server.a2a.pool import close_client

    await close_writer(ctx)
    await close_client(ctx)
