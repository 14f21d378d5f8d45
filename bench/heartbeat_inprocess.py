"""The heartbeat's own CPU per request, without the sockets: the real server protocol, app and batcher.

A diagnostic beside `bench/heartbeat.py`, whose rate moves with everything else on the two cores (the
client, Postgres, other people's load). Here one process runs the app (`create_app`, Postgres in a
throwaway database) behind the protocol `serve` runs (uvicorn's httptools protocol with serving.py's
bounds and hot lane), and C simulated connections feed it the bytes of `POST /registry/heartbeat`
requests: each connection sends its next heartbeat as soon as its previous answer is written. What is
measured is everything the server process does for a heartbeat (parser, hot shell, route, batcher and its
statement's client side, events, the answer's bytes) except the socket syscalls; Postgres's own work runs in
its process and is not counted. CPU is `time.process_time()` over a round; the best of R rounds:

    RESULT heartbeat-inprocess us_per_hb=<best round> rounds=<each round>

`--profile` prints cProfile's top functions (inflates small calls: compare only like with like).
Instruction counts do not move with the machine's load; with the batch stubbed they repeat to ~1 %:

    valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/heartbeat_inprocess.py \
        --callgrind --stub-batch --agents 100 --rounds 10 --repeat 1

and divide the `Collected` figure valgrind prints by the heartbeats counted (printed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import time
import uuid
from typing import Any

import httpx
import uvloop
from inprocess import add_pg_argument, throwaway_app  # bench/inprocess.py: puts src/ on the path
from uvicorn.server import ServerState

from workspace_server.cli import server_config


def heartbeat_request(ws_id: str, token: str, rnd: int) -> bytes:
    """What bench/rawhttp.py sends for a heartbeat (the same head and body as bench/heartbeat.py)."""
    body = json.dumps(
        {
            "workspace_id": ws_id,
            "error_rate": 0.0,
            "sample_error": "",
            "active_tasks": 0,
            "uptime_seconds": 30 * rnd,
            "current_task": "",
        }
    ).encode()
    head = (
        "POST /registry/heartbeat HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n"
        f"content-type: application/json\r\nauthorization: Bearer {token}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection(asyncio.Transport):
    """A client connection as the protocol sees it: a transport whose writes are the answers. Each
    complete answer (one write, serving.py's `_send_answer`) makes the client send its next request."""

    def __init__(self, driver: Driver, requests: list[bytes]) -> None:
        super().__init__()
        self.driver, self.requests = driver, requests
        self.protocol: Any = None
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not bytes(data).startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"bench failed: {bytes(data)[:300]!r}")
        self.driver.answered()
        self.send_next()

    def send_next(self) -> None:
        if self.requests:
            request = self.requests.pop()
            self.driver.loop.call_soon(self.protocol.data_received, request)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def get_write_buffer_size(self) -> int:
        return 0


class Driver:
    def __init__(self, config: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.config, self.loop = config, loop
        self.state = ServerState()
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    def answered(self) -> None:
        self.left -= 1
        if self.left == 0 and self.done is not None:
            self.done.set_result(None)

    async def round(self, requests: list[list[bytes]]) -> None:
        self.left = sum(len(r) for r in requests)
        self.done = self.loop.create_future()
        for reqs in requests:
            conn = Connection(self, reqs)
            proto = self.config.http_protocol_class(
                config=self.config, server_state=self.state, app_state={}, _loop=self.loop
            )
            conn.protocol = proto
            proto.connection_made(conn)
            conn.send_next()
        await asyncio.wait_for(self.done, 600)


async def main(args: argparse.Namespace) -> None:
    if args.stub_batch:
        stub_batch()
    async with throwaway_app(args.pg, "bench_hbin") as (app, _asgi):
        await measure(app, args)


async def register(app: Any, agents: int) -> list[tuple[str, str]]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    out = []
    try:
        for _ in range(agents):
            ws_id = str(uuid.uuid4())
            card = {"id": ws_id, "url": "http://localhost:9", "agent_card": {"name": "bench", "skills": []}}
            r = await client.post("/registry/register", json=card)
            if r.status_code != 200:
                raise SystemExit(f"bench failed: register {r.status_code} {r.text[:200]}")
            out.append((ws_id, r.json()["auth_token"]))
    finally:
        await client.aclose()
    return out


def requests_for(
    agents: list[tuple[str, str]], first_round: int, rounds: int, conc: int
) -> list[list[bytes]]:
    """Each agent's heartbeats, round after round, dealt to `conc` connections (popped from the end)."""
    flat = [heartbeat_request(w, t, first_round + r) for r in range(rounds) for w, t in agents]
    per = [flat[i::conc] for i in range(conc)]
    return [list(reversed(p)) for p in per]


async def measure(app: Any, args: argparse.Namespace) -> None:
    agents = await register(app, args.agents)
    config = server_config(app, "127.0.0.1", 8000)
    config.load()
    driver = Driver(config, asyncio.get_running_loop())
    await driver.round(requests_for(agents, 0, 1, args.concurrency))  # warm-up
    profile = cProfile.Profile() if args.profile else None
    results = []
    for i in range(args.repeat):
        reqs = requests_for(agents, 1 + i * args.rounds, args.rounds, args.concurrency)
        n = sum(len(r) for r in reqs)
        if profile:
            profile.enable()
        callgrind(args, "on")
        start = time.process_time()
        await driver.round(reqs)
        results.append((time.process_time() - start) / n * 1e6)
        callgrind(args, "off")
        if profile:
            profile.disable()
        if args.callgrind:
            print(f"# callgrind counted {n} heartbeats: Ir per heartbeat = valgrind's 'Collected' / {n}")
    if profile:
        if args.profile_out:
            profile.dump_stats(args.profile_out)
        pstats.Stats(profile).sort_stats("tottime").print_stats(45)
    shown = ",".join(f"{r:.1f}" for r in results)
    print(f"RESULT heartbeat-inprocess us_per_hb={min(results):.1f} rounds={shown}")


def callgrind(args: argparse.Namespace, state: str) -> None:
    """Switch callgrind's instrumentation (run under `valgrind --tool=callgrind --instr-atstart=no`), so
    only the measured rounds are counted, not the start-up."""
    if args.callgrind:
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def stub_batch() -> None:
    """Every heartbeat answered at once as an unchanged online workspace, nothing queued: the batch's
    timing (its size depends on how fast Postgres answers) can then not change what is counted."""
    from workspace_server.registry import batch
    from workspace_server.registry.store import HeartbeatSnapshot

    async def submit(self: batch.HeartbeatBatcher, beat: batch.Beat) -> batch.BeatResult:
        return batch.BeatResult(False, HeartbeatSnapshot("online", "", 1), False, "2026-12-08T00:00:00Z")

    batch.HeartbeatBatcher.submit = submit  # type: ignore[method-assign]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5, help="heartbeats per agent in a measured round")
    p.add_argument("--repeat", type=int, default=3, help="measured rounds; the best is printed")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--profile", action="store_true", help="cProfile's top functions")
    p.add_argument("--profile-out", help="with --profile: also write the pstats file here")
    p.add_argument("--callgrind", action="store_true", help="count only the measured rounds (see above)")
    p.add_argument("--stub-batch", action="store_true", help="a canned batch result instead of Postgres")
    add_pg_argument(p)
    return p.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
