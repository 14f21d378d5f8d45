"""The floor of any Python proxy on our stack: uvicorn (httptools, uvloop) plus one pooled aiohttp client,
forwarding each POST body to `FORWARD_TO` and the reply back, with no other work at all (no auth, no
checks, no activity row, no events, no middleware). `bench/a2a.py` runs it beside the real proxy, so its
ratio shows how much of the gap to the direct path is the HTTP stack itself rather than our pipeline.

`FORWARD_CLIENT=ours` forwards with the proxy's own agent client (`a2a/transport.py`) instead of aiohttp:
the floor of our own stack, which the bench prints beside the issue's (aiohttp) floor.

    FORWARD_TO=http://127.0.0.1:8000 python -m uvicorn forwarder:app --app-dir bench --no-access-log
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

TARGET = os.environ.get("FORWARD_TO", "")
OURS = os.environ.get("FORWARD_CLIENT", "") == "ours"
_session: aiohttp.ClientSession | None = None
_ours: Any = None  # workspace_server.a2a.transport.AgentClient when OURS


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
            if OURS:
                global _ours
                from workspace_server.a2a.transport import AgentClient

                _ours = AgentClient(
                    None,
                    max_connections=2000,
                    keepalive=5.0,
                    connect_timeout=30.0,
                    sock_connect_timeout=10.0,
                    max_body=10 << 20,
                )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _ours is not None:
                await _ours.close()
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _body(receive)
    if _ours is not None:
        from workspace_server.a2a.transport import Reply

        got = Reply()
        await _ours.post(TARGET, body, got)
        data, status = got.body, got.status or 502
    else:
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
