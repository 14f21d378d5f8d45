"""Local fan-out of bus events to WebSocket clients and SSE streams (spec 04 §3).

Every subscriber has a bounded queue (WebSocket 256, SSE 64). The bus listener never blocks and never
awaits: a full queue drops the event for that subscriber only, so one slow client cannot stall the
others or the publisher. A cheap synchronous `match` (SSE: "is this my workspace?") runs in the
listener so other workspaces' events never take buffer space; the hierarchy check of agent WebSocket
clients needs the database, so it runs in the client's own send task (`pump`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from workspace_server.events.bus import Bus, Event

log = logging.getLogger(__name__)

SEND_BUFFER = 256  # per WebSocket client, as the reference's hub
SSE_BUFFER = 64  # per SSE stream, as the reference's SubscribeSSE

Match = Callable[[Event], bool]


@dataclass(eq=False)
class HubClient:
    workspace_id: str | None  # None: canvas client (or admin stream), receives everything
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(SEND_BUFFER))
    match: Match | None = None
    dropped: int = 0


class Hub:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._clients: set[HubClient] = set()  # WebSocket connections (the metrics gauge)
        self._streams: set[HubClient] = set()  # SSE streams
        bus.add_listener(self._on_event)

    @property
    def client_count(self) -> int:
        """Open WebSocket connections: `molecule_websocket_connections_active`."""
        return len(self._clients)

    def register(self, workspace_id: str | None) -> HubClient:
        """A WebSocket client. Register before accepting so no event after the handshake is missed."""
        client = HubClient(workspace_id)
        self._clients.add(client)
        return client

    def subscribe(self, match: Match | None, buffer: int = SSE_BUFFER) -> HubClient:
        """An SSE stream receiving the events `match` accepts (all when None)."""
        client = HubClient(None, asyncio.Queue(buffer), match)
        self._streams.add(client)
        return client

    def unregister(self, client: HubClient) -> None:
        """Idempotent; for both kinds of subscriber."""
        self._clients.discard(client)
        self._streams.discard(client)

    def _on_event(self, event: Event) -> None:
        if not self._clients and not self._streams:
            return  # no one connected: the usual case for heartbeats between canvas sessions
        for client in [*self._clients, *self._streams]:
            if client.match is not None and not client.match(event):
                continue
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                client.dropped += 1
                log.debug("subscriber buffer full; dropped %s", event.event)

    async def pump(
        self,
        client: HubClient,
        send: Callable[[Event], Awaitable[None]],
        allowed: Callable[[Event], Awaitable[bool]],
    ) -> None:
        """Deliver the client's queue until `send` raises (the caller treats that as the end)."""
        while True:
            event = await client.queue.get()
            if await allowed(event):
                await send(event)

    def close(self) -> None:
        self._bus.remove_listener(self._on_event)
        self._clients.clear()
        self._streams.clear()
