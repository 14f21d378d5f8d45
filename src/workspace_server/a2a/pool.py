"""The A2A proxy's outbound transport: the two connection pools agent calls go out on (`a2a_client`, over
`transport.AgentClient`), and the idle watch that decides when a quiet agent has had long enough
(`run_watched`, `IdleTimeout`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from workspace_server.a2a.transport import AgentClient
from workspace_server.context import AppContext
from workspace_server.egress import policy_for
from workspace_server.events.bus import Event

# No read/write timeout: the idle watch decides when a quiet agent has had long enough. CONNECT_TIMEOUT
# bounds the wait for a free connection plus the connect itself; SOCK_CONNECT_TIMEOUT the connect alone.
CONNECT_TIMEOUT = 30.0
SOCK_CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 2000  # agent connections open at once, all agents together
KEEPALIVE_SECONDS = 5.0  # idle agent connections are closed after this
MAX_RESPONSE_BYTES = 10 << 20  # a longer reply (decoded) is a read failure


# ---- the outbound client ----


def a2a_client(ctx: AppContext, assigned_url: bool = False) -> AgentClient:
    """The pool for agent calls, created on first use and closed by `close_client`.

    Agent-supplied URLs connect only to addresses the egress policy admits, judged when a connection is
    opened (transport.py), so DNS rebinding cannot get past the check made before the call. URLs this
    server's backend assigned (`assigned_url`) use a second pool without the policy: they may be loopback
    or a container name on the Docker network.

    Its own pool, not the shared httpx `ctx.http`: A2A calls last minutes, so a few dozen in flight would
    starve every other outbound call; and its own client, since this is the data path of every A2A
    message (docs/decisions.md "The A2A transport"). No cookies are kept: agents share hosts (127.0.0.1,
    ports apart), and cookies do not isolate by port.
    """
    parts = ctx.a2a
    client = parts.trusted_client if assigned_url else parts.client
    if client is None:
        client = AgentClient(
            None if assigned_url else policy_for(ctx.settings),
            max_connections=MAX_CONNECTIONS,
            keepalive=KEEPALIVE_SECONDS,
            connect_timeout=CONNECT_TIMEOUT,
            sock_connect_timeout=SOCK_CONNECT_TIMEOUT,
            max_body=MAX_RESPONSE_BYTES,
        )
        if assigned_url:
            parts.trusted_client = client
        else:
            parts.client = client
    return client


async def close_client(ctx: AppContext) -> None:
    parts = ctx.a2a
    clients = (parts.client, parts.trusted_client)
    parts.client = parts.trusted_client = None
    for client in clients:
        if client is not None:
            await client.close()


# ---- idle watch: the time of the last bus event per workspace with a dispatch in flight ----


class IdleWatch:
    """One bus listener for all dispatches (not one subscription per request)."""

    def __init__(self) -> None:
        self._seen: dict[str, list[float]] = {}  # ws -> [last event (monotonic), dispatches in flight]

    def on_event(self, event: Event) -> None:
        rec = self._seen.get(event.workspace_id or "")
        if rec is not None:
            rec[0] = time.monotonic()

    def enter(self, ws_id: str) -> None:
        rec = self._seen.setdefault(ws_id, [0.0, 0.0])
        rec[1] += 1

    def leave(self, ws_id: str) -> None:
        rec = self._seen.get(ws_id)
        if rec is not None:
            rec[1] -= 1
            if rec[1] <= 0:
                del self._seen[ws_id]

    def last_event(self, ws_id: str) -> float:
        rec = self._seen.get(ws_id)
        return rec[0] if rec else 0.0


def idle_watch(ctx: AppContext) -> IdleWatch:
    return ctx.a2a.idle_watch


class IdleTimeout(Exception):
    def __init__(self, seconds: float, ceiling: bool) -> None:
        super().__init__(
            f"no reply and no activity for {seconds:g}s" if not ceiling else "dispatch ceiling reached"
        )
        self.ceiling = ceiling


async def run_watched(
    watch: IdleWatch, ws_id: str, coro: Coroutine[Any, Any, Any], idle: float, ceiling: float | None
) -> Any:
    """Await `coro`, cancelling it after `idle` seconds without a bus event for `ws_id` (or at `ceiling`).

    A timer re-arms itself while events keep coming (as `asyncio.timeout` does, without a second task).
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    hard = start + ceiling if ceiling else None
    fired: list[bool] = []
    handle: asyncio.TimerHandle | None = None

    def deadline() -> float:
        soft = max(start, watch.last_event(ws_id)) + idle
        return soft if hard is None else min(soft, hard)

    def check() -> None:
        nonlocal handle
        remaining = deadline() - time.monotonic()
        if remaining > 0:
            handle = loop.call_later(remaining, check)
            return
        fired.append(hard is not None and deadline() >= hard)
        task.cancel()

    handle = loop.call_later(idle if hard is None else min(idle, ceiling or idle), check)
    watch.enter(ws_id)
    try:
        return await coro
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise IdleTimeout(idle, ceiling=fired[0]) from None
        raise
    finally:
        if handle is not None:
            handle.cancel()
        watch.leave(ws_id)
