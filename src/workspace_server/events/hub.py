"""WebSocket fan-out to canvas and agent clients (spec 04 §3 `GET /ws`).

Each client has a bounded queue (256); the bus listener never blocks: a full queue drops the event.
Per-client filtering (hierarchy for agent clients) happens in the client's own send task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from workspace_server.events.bus import Bus, Event

SEND_BUFFER = 256


@dataclass(eq=False)
class HubClient:
    workspace_id: str | None  # None: canvas client, receives everything
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(SEND_BUFFER))


class Hub:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._clients: set[HubClient] = set()
        bus.add_listener(self._on_event)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def register(self, workspace_id: str | None) -> HubClient:
        client = HubClient(workspace_id)
        self._clients.add(client)
        return client

    def unregister(self, client: HubClient) -> None:
        self._clients.discard(client)

    def _on_event(self, event: Event) -> None:
        for client in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(event)

    async def pump(
        self,
        client: HubClient,
        send: Callable[[Event], Awaitable[None]],
        allowed: Callable[[Event], Awaitable[bool]],
    ) -> None:
        while True:
            event = await client.queue.get()
            if await allowed(event):
                await send(event)

    def close(self) -> None:
        self._bus.remove_listener(self._on_event)
        self._clients.clear()
