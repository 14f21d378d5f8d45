"""The floor of any Python proxy on our stack: uvicorn (httptools, uvloop) plus one pooled aiohttp client,
forwarding each POST body to `FORWARD_TO` and the reply back, with no other work at all (no auth, no
checks, no activity row, no events, no middleware). `bench/a2a.py` runs it beside the real proxy, so its
ratio shows how much of the gap to the direct path is the HTTP stack itself rather than our pipeline.

    FORWARD_TO=http://127.0.0.1:8000 python -m uvicorn forwarder:app --app-dir bench --no-access-log
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

TARGET = os.environ.get("FORWARD_TO", "")
_session: aiohttp.ClientSession | None = None


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _lifespan(receive: Any, send: Any) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2000))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _body(receive)
    assert _session is not None
    headers = {"Content-Type": "application/json"}
    async with _session.post(TARGET, data=body, headers=headers, allow_redirects=False) as reply:
        data, status = await reply.read(), reply.status
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": data})
