"""Agent-to-agent messaging: the A2A proxy, its queue, delegation (spec 04 §1, §2).

`install(ctx)` at start-up wires the pieces other areas call through `ctx.extras`:
- `queue_drain` (the registry calls it after a heartbeat with spare capacity),
- `a2a_proxy` (`await ctx.extras["a2a_proxy"](target_id, body, caller, log_activity)` for in-process
  senders such as cron, channels and webhooks; callers use `system:`/`webhook:`/`channel:` ids or "").
`shutdown(ctx)` cancels background deliveries and logging before the engine is disposed, and closes
the A2A connection pool (`ctx.extras["a2a_http"]`).
"""

from __future__ import annotations

from functools import partial

from workspace_server.context import AppContext


def install(ctx: AppContext) -> None:
    from workspace_server.a2a import queue
    from workspace_server.a2a.proxy import a2a_client, idle_watch, proxy_a2a, target_cache

    a2a_client(ctx)
    idle_watch(ctx)
    target_cache(ctx)
    queue.install(ctx)
    ctx.extras["a2a_proxy"] = partial(proxy_a2a, ctx)


async def shutdown(ctx: AppContext) -> None:
    from workspace_server.a2a.logwriter import close_writer
    from workspace_server.a2a.proxy import cancel_background, close_client

    await cancel_background(ctx)
    await close_writer(ctx)
    await close_client(ctx)
