"""The A2A proxy's own CPU per call, without the network: the real app and pipeline, the agent stubbed.

A diagnostic beside `bench/a2a.py`, whose figures move with everything else on the two cores (the agent,
the callers, the kernel's loopback TCP). Here one process runs the app (`create_app`, Postgres in a
throwaway database, the activity journal and batch writer as in production) and calls it through ASGI:
`POST /workspaces/:id/a2a` in batches of 50 concurrent calls, the agent exchange replaced by a canned reply
(`AgentClient.post`), so what is measured is the hot lane, the route, the pipeline, the activity row and
its batch write, and nothing of uvicorn or the sockets. CPU is `time.process_time()` over the calls and
until the writer has stored every row; the best of R rounds is printed:

    RESULT a2a-inprocess us_per_call=<best round> rounds=<each round>

`--profile` prints cProfile's top functions (inflates small calls: compare only like with like).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time
from typing import Any

import httpx
import uvloop
from a2a import message_body  # bench/a2a.py, beside this file
from inprocess import add_pg_argument, throwaway_app  # bench/inprocess.py: puts src/ on the path

from workspace_server.a2a import transport

BATCH = 50
REPLY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": "1",
        "result": {
            "kind": "message",
            "messageId": "r",
            "role": "agent",
            "parts": [{"kind": "text", "text": "pong"}],
        },
    }
).encode()
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"accept", b"*/*"),
    (b"user-agent", b"Python/3.11 aiohttp/3.9"),
]


async def _canned_reply(self: Any, url: str, body: bytes, reply: transport.Reply) -> None:
    reply.status, reply.body, reply.duration_ms = 200, REPLY, 1


def message(i: int) -> bytes:
    return json.dumps(message_body(i)).encode()  # the body bench/a2a.py sends


class Caller:
    """Drives the ASGI app directly: one scope, receive and send per call."""

    def __init__(self, app: Any, path: str) -> None:
        self.app, self.path = app, path
        self.ok = 0

    async def call(self, body: bytes) -> None:
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return pending.pop() if pending else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.ok += 1

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "POST",
            "root_path": "",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
            "state": {},
        }
        await self.app(scope, receive, send)


async def run_round(app: Any, caller: Caller, calls: int) -> float:
    bodies = [message(i) for i in range(calls)]
    writer = app.state.ctx.a2a.log_writer
    caller.ok = 0
    start = time.process_time()
    for first in range(0, calls, BATCH):
        await asyncio.gather(*(caller.call(b) for b in bodies[first : first + BATCH]))
        await asyncio.sleep(0)  # let the batch writer run as it would between requests
    while writer._pending or writer._flushing:  # the rows stored: their cost counts
        await asyncio.sleep(0.001)
    spent = time.process_time() - start
    if caller.ok != calls:
        raise SystemExit(f"bench failed: {calls - caller.ok} of {calls} calls were not answered 200")
    return spent / calls * 1e6


async def main(args: argparse.Namespace) -> None:
    transport.AgentClient.post = _canned_reply  # type: ignore[method-assign]
    async with throwaway_app(args.pg, "bench_inproc") as (app, asgi):
        await measure(app, asgi, args)


async def measure(app: Any, asgi: Any, args: argparse.Namespace) -> None:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://bench")
    try:
        created = (await client.post("/workspaces", json={"name": "Bench Agent", "tier": 1})).json()
        card = {"id": created["id"], "url": "http://localhost:9", "agent_card": {"name": "bench"}}
        if (await client.post("/registry/register", json=card)).status_code != 200:
            raise SystemExit("bench failed: register")
    finally:
        await client.aclose()
    caller = Caller(asgi, f"/workspaces/{created['id']}/a2a")
    await run_round(app, caller, 1000)  # warm-up: caches, prepared statements, the journal
    profile = cProfile.Profile() if args.profile else None
    rounds = []
    for _ in range(args.rounds):
        if profile:
            profile.enable()
        rounds.append(await run_round(app, caller, args.calls))
        if profile:
            profile.disable()
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(40)
    shown = ",".join(f"{r:.1f}" for r in rounds)
    print(f"RESULT a2a-inprocess us_per_call={min(rounds):.1f} rounds={shown}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=5000, help="calls per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="cProfile's top functions")
    add_pg_argument(p)
    return p.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
