"""Server-Sent Events streams (spec 04 §3 `GET /workspaces/:id/events/stream`).

Byte format, as the reference writes it: `: ping\n\n` once the stream is live, then one
`data: {"type":…,"timestamp":<unix ms>,"data":…}\n\n` per event. No ids, no periodic keep-alives, no
replay. sse-starlette runs the stream: it stops the generator on client disconnect and on server
shutdown (a bare StreamingResponse would hold uvicorn's graceful shutdown open forever).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime

from sse_starlette.sse import EventSourceResponse

from workspace_server.common.time import utcnow
from workspace_server.events.bus import Event
from workspace_server.events.hub import Hub, Match

SSE_HEADERS = {
    "Content-Type": "text/event-stream",  # exact: no `; charset=` suffix, as the reference
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}
PING = b": ping\n\n"


def unix_ms(timestamp: str) -> int:
    """The event's broadcast time in Unix milliseconds (now, if the stamp is unreadable)."""
    try:
        ts = datetime.fromisoformat(timestamp)
    except ValueError:
        ts = utcnow()
    return int(ts.timestamp() * 1000)


def encode_sse(event: Event) -> bytes:
    body = {"type": event.event, "timestamp": unix_ms(event.timestamp), "data": event.payload}
    return b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _frames(hub: Hub, match: Match | None) -> AsyncIterator[bytes]:
    client = hub.subscribe(match)  # before the ping: once the client reads it, nothing is missed
    try:
        yield PING
        while True:
            yield encode_sse(await client.queue.get())
    finally:
        hub.unregister(client)


def event_stream(hub: Hub, match: Match | None) -> EventSourceResponse:
    return EventSourceResponse(_frames(hub, match), headers=SSE_HEADERS, ping=0, sep="\n")


def for_workspace(workspace_id: str) -> Match:
    return lambda event: event.workspace_id == workspace_id
