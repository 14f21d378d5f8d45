"""Record-and-broadcast: the one way events leave the server (spec 04 §3)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import structure_events
from workspace_server.events.bus import Bus, Event

log = logging.getLogger(__name__)

Announcement = tuple[str, str | None, dict[str, Any]]  # (event type, workspace id, payload)


class EventService:
    def __init__(self, engine: AsyncEngine, bus: Bus) -> None:
        self.engine = engine
        self.bus = bus

    async def record(self, event_type: str, workspace_id: str | None, payload: dict[str, Any]) -> None:
        """Persist then broadcast. A failed insert broadcasts nothing (the trail and the stream agree)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.insert(structure_events).values(
                        id=new_id(),
                        event_type=event_type,
                        workspace_id=workspace_id,
                        payload=payload,
                        created_at=utcnow(),
                    )
                )
        except Exception:
            log.exception("failed to record event %s for %s", event_type, workspace_id)
            return
        await self.broadcast(event_type, workspace_id, payload)

    async def broadcast(
        self, event_type: str, workspace_id: str | None, payload: dict[str, Any], timestamp: str = ""
    ) -> None:
        """Broadcast-only events (heartbeats, task updates, activity): WebSocket + SSE, not persisted.
        `timestamp` (RFC 3339): the moment of a batch announced together; now when not given."""
        try:
            event = Event(event_type, workspace_id, payload, timestamp) if timestamp else None
            await self.bus.publish(event or Event(event_type, workspace_id, payload))
        except Exception:
            log.exception("failed to broadcast event %s", event_type)

    async def broadcast_many(self, events: Sequence[Announcement], timestamp: str) -> None:
        """Broadcast-only events announced together at `timestamp` (RFC 3339), in order, published at once
        (with Redis: one round trip): the activity writer's batch."""
        if not events:
            return
        try:
            await self.bus.publish_many(
                [Event(kind, ws_id, payload, timestamp) for kind, ws_id, payload in events]
            )
        except Exception:
            log.exception("failed to broadcast %d events", len(events))
