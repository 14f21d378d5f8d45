"""A2A proxy overhead: `message/send` through `POST /workspaces/:id/a2a` against straight to the agent.

1. Create a throwaway Postgres database (or `--db sqlite`: a file in the work dir); start
   `python -m workspace_server serve` on a free loopback port (MOLECULE_ENV=development so the agent's
   loopback URL is dialable, no ADMIN_TOKEN, WORKSPACE_BACKEND=none, RATE_LIMIT high, in-process bus;
   `--redis URL`: Redis as cache and bus, as every replica of a many-replica layout runs).
2. Create a workspace and start one reference agent for it (`python -m molecule_agent`, echo replies);
   wait until it registered and is online.
3. Sequential: S pairs of calls, direct and proxied interleaved, after a warm-up; p50 of each, and the
   difference is the proxy's added latency. Proxied calls are canvas calls (no X-Workspace-ID): the
   full pipeline (budget, URL cache, SSRF check, normalisation, activity row, A2A_RESPONSE).
4. Concurrent: N calls with C=50 in flight (one pooled aiohttp client per destination: httpx would
   spend ~1.5 ms of CPU per call, more than the proxy, on the same two cores), direct, proxied and
   through `bench/forwarder.py` (a bare uvicorn + aiohttp forwarder with no logic at all: the ceiling of
   any proxy on this stack), in R rounds (`--rounds`, 5) of alternating order; a path's throughput = all
   its calls / all the wall time they took, over every round (until session 12: the best round of each
   path, whose ratio spread 0.76–1.02 over runs of the same code; see bench/README.md, Session 12);
   CPU per call of the server, the forwarder and the agent (psutil), over all rounds.
5. Print `RESULT a2a-forwarder ratio=<proxied/forwarder throughput> cpu_ratio=<server/forwarder CPU per
   call> p50_added_ms=<proxied - direct p50> p99_added_ms=<same at p99> server_cpu_ms=… forwarder_cpu_ms=…`
   (issue 14 §4 targets: ratio ≥ 0.8, cpu_ratio ≤ 1.5, p50_added_ms ≤ 2). `--profile` records the server
   with py-spy during the concurrent phase.

Bounded in count and time: every phase has a deadline; the run fails rather than hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
PHASE_DEADLINE = 600.0


class BenchError(RuntimeError):
    """A failed step. Not SystemExit: raised inside a coroutine, that skips the clean-up `finally`s."""


class Client:
    """A keep-alive aiohttp session: (status, parsed JSON body or None) per call."""

    def __init__(self, connections: int, keepalive: float) -> None:
        connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=keepalive)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))

    async def call(self, method: str, url: str, body: object = None) -> tuple[int, Any]:
        async with self.session.request(method, url, json=body) as r:
            raw = await r.read()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, raw[:200]

    async def close(self) -> None:
        await self.session.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def admin_exec(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _env(**extra: str) -> dict[str, str]:
    drop = ("ADMIN_TOKEN", "REDIS_URL", "MOLECULE_ENV", "WORKSPACE_ID", "HOSTNAME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(ROOT / "src"), **extra)
    return env


def start_server(database_url: str, port: int, workdir: Path, redis_url: str = "") -> subprocess.Popen[bytes]:
    """`redis_url`: the replica layout's shared cache and event bus (every replica has it), else none."""
    env = _env(
        DATABASE_URL=database_url,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKSPACE_BACKEND="none",
        RATE_LIMIT="100000000",
        MOLECULE_ENV="development",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    log = (workdir / "server.log").open("wb")
    cmd = [sys.executable, "-m", "workspace_server", "serve"]
    return subprocess.Popen(cmd, cwd=str(workdir), env=env, stdout=log, stderr=subprocess.STDOUT)


# Control agent: the same echo reply, written in one send with TCP_NODELAY. The reference agent writes
# headers and body separately with Nagle on, so a reply often waits for the caller's delayed ACK
# (~40 ms on Linux); that noise swamps a millisecond-scale difference, so the control isolates it.
CONTROL_AGENT = r"""
import json, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def setup(self):
        super().setup(); self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        text = req["params"]["message"]["parts"][0]["text"]
        parts = [{"kind": "text", "text": text}]
        msg = {"kind": "message", "messageId": "r", "role": "agent", "parts": parts}
        data = json.dumps({"jsonrpc": "2.0", "id": req.get("id"), "result": msg}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        self.wfile.write(head.encode() + data)
class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def start_control_agent(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / "control-agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", CONTROL_AGENT, str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    return proc, f"http://127.0.0.1:{port}"


def start_forwarder(
    agent_url: str, workdir: Path, client: str = "aiohttp"
) -> tuple[subprocess.Popen[bytes], str]:
    """`client`: "aiohttp" (the issue's floor) or "ours" (the same forwarder on the proxy's own client)."""
    port = free_port()
    log = (workdir / f"forwarder-{client}.log").open("wb")
    cmd = [sys.executable, "-m", "uvicorn", "forwarder:app", "--app-dir", str(ROOT / "bench")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
    env = _env(FORWARD_TO=agent_url, FORWARD_CLIENT=client)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def start_agent(ws_id: str, platform_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    cfg = workdir / f"agent-{ws_id[:8]}"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.yaml").write_text("name: Bench Agent\n", encoding="utf-8")
    port = free_port()
    env = _env(
        WORKSPACE_ID=ws_id,
        PLATFORM_URL=platform_url,
        WORKSPACE_CONFIG_PATH=str(cfg),
        A2A_PORT=str(port),
        A2A_HOST="127.0.0.1",
        HEARTBEAT_INTERVAL_SECONDS="120",
    )
    log = (workdir / "agent.log").open("wb")
    cmd = [sys.executable, "-m", "molecule_agent"]
    proc = subprocess.Popen(cmd, cwd=str(workdir), env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise BenchError(f"a process exited ({p.returncode}) while waiting for {what}")
        try:
            if await check():
                return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise BenchError(f"timed out waiting for {what}")


def message_body(i: int) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": str(i),
        "method": "message/send",
        "params": {
            "message": {
                "role": "user",
                "messageId": str(uuid.uuid4()),
                "parts": [{"kind": "text", "text": f"ping {i}"}],
            }
        },
    }


Send = Callable[[int], Awaitable[None]]


def sender(client: Client, url: str) -> Send:
    async def send(i: int) -> None:
        status, data = await client.call("POST", url, message_body(i))
        if status != 200 or not isinstance(data, dict) or "result" not in data:
            raise BenchError(f"call to {url} failed: {status} {data!r}"[:300])

    return send


Latencies = tuple[list[float], list[float]]


async def sequential(direct: Send, proxied: Send, pairs: int) -> Latencies:
    """Each call's latency in ms on each path, calls interleaved so drift hits both alike."""
    d: list[float] = []
    p: list[float] = []
    for i in range(pairs):
        for send, out in ((direct, d), (proxied, p)) if i % 2 else ((proxied, p), (direct, d)):
            t0 = time.perf_counter()
            await send(i)
            out.append((time.perf_counter() - t0) * 1000)
    return d, p


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) of `values`, by the inclusive method (p50 = the median)."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def concurrent(send: Send, calls: int, concurrency: int) -> float:
    """Calls per second with `concurrency` callers."""
    it = iter(range(calls))

    async def worker() -> None:
        for i in it:  # shared iterator: each call is taken by exactly one worker
            await send(i)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), PHASE_DEADLINE)
    return calls / (time.perf_counter() - t0)


async def ramp(send: Send, concurrency: int) -> None:
    """Grow the connection pools one connection at a time: the reference agent listens with a backlog
    of 5 and accepts on one thread, so a burst of connects (or a pool that keeps too few alive and
    reconnects under load) gets some of them reset by the kernel."""
    for c in range(1, concurrency + 1):
        await concurrent(send, c, c)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def control_run(
    args: argparse.Namespace,
    client: Client,
    agent_client: Client,
    base: str,
    workdir: Path,
    procs: list[subprocess.Popen[bytes]],
) -> tuple[float, float] | None:
    """Sequential p50s against the control agent, registered as a second workspace."""
    if args.no_control:
        return None
    proc, url = start_control_agent(workdir)
    procs.append(proc)
    ws_id = str(uuid.uuid4())
    body = {"id": ws_id, "url": url.replace("127.0.0.1", "localhost"), "agent_card": {"name": "control"}}

    async def registered() -> bool:
        return (await client.call("POST", base + "/registry/register", body))[0] == 200

    await wait_until(registered, "control agent registered", procs)

    async def listening() -> bool:
        return (await agent_client.call("GET", url))[0] > 0

    await wait_until(listening, "control agent listening", procs)
    direct = sender(agent_client, url)
    proxied = sender(client, f"{base}/workspaces/{ws_id}/a2a")
    for i in range(args.warmup):
        await direct(i)
        await proxied(i)
    d, p = await asyncio.wait_for(sequential(direct, proxied, args.pairs), PHASE_DEADLINE)
    return statistics.median(d), statistics.median(p)


async def run(args: argparse.Namespace, database_url: str, workdir: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(database_url, port, workdir, args.redis)
    procs = [server]
    try:
        # the agent never closes idle connections; uvicorn does after 5 s, so expire ours sooner
        n = args.concurrency
        client, agent_client = Client(n, keepalive=2.0), Client(n, keepalive=60.0)
        try:

            async def healthy() -> bool:
                return (await client.call("GET", base + "/health"))[0] == 200

            await wait_until(healthy, "server health", procs)
            status, created = await client.call(
                "POST", base + "/workspaces", {"name": "Bench Agent", "tier": 1}
            )
            if status != 201:
                raise BenchError(f"create failed: {status} {created!r}")
            ws_id = created["id"]
            agent, agent_url = start_agent(ws_id, base, workdir)
            procs.append(agent)

            async def online() -> bool:
                _, got = await client.call("GET", f"{base}/workspaces/{ws_id}")
                return isinstance(got, dict) and got.get("status") == "online"

            await wait_until(online, "agent online", procs)
            direct = sender(agent_client, agent_url)
            proxied = sender(client, f"{base}/workspaces/{ws_id}/a2a")
            for i in range(args.warmup):  # warm-up: connections, caches, JIT-free but allocator-warm
                await direct(i)
                await proxied(i)

            lat = await asyncio.wait_for(sequential(direct, proxied, args.pairs), PHASE_DEADLINE)
            control = await control_run(args, client, agent_client, base, workdir, procs)
            paths = {"direct": direct, "proxied": proxied}
            watched = {"server": psutil.Process(server.pid), "agent": psutil.Process(agent.pid)}
            for name, kind in (("forwarder", "aiohttp"), ("forwarder_ours", "ours")):
                fwd, fwd_url = start_forwarder(agent_url, workdir, kind)
                procs.append(fwd)
                paths[name] = sender(client, fwd_url)
                watched[name] = psutil.Process(fwd.pid)

                async def forwarding(url: str = fwd_url) -> bool:
                    return (await client.call("POST", url, message_body(0)))[0] == 200

                await wait_until(forwarding, name, procs)
            rates: dict[str, list[float]] = {name: [] for name in paths}
            cpu: dict[str, float] = dict.fromkeys(watched, 0.0)
            spy = start_profiler(server.pid, workdir) if args.profile else None
            for round_no in range(args.rounds):
                for name in list(paths) if round_no % 2 == 0 else list(reversed(paths)):
                    send = paths[name]
                    await ramp(send, args.concurrency)
                    before = {k: cpu_seconds(p) for k, p in watched.items()}
                    rates[name].append(await concurrent(send, args.calls, args.concurrency))
                    if name == "proxied":
                        cpu["server"] += cpu_seconds(watched["server"]) - before["server"]
                        cpu["agent"] += cpu_seconds(watched["agent"]) - before["agent"]
                    elif name.startswith("forwarder"):
                        cpu[name] += cpu_seconds(watched[name]) - before[name]
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT, not on SIGTERM
                spy.wait(timeout=60)
        finally:
            await client.close()
            await agent_client.close()
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    report(args, lat, control, rates, cpu)


def report(
    args: argparse.Namespace,
    lat: Latencies,
    control: tuple[float, float] | None,
    rates: dict[str, list[float]],
    cpu: dict[str, float],
) -> None:
    """The figures, then the one RESULT line: throughput and server CPU against the bare forwarder (the
    floor of any proxy on this stack, same run), latency added over a direct call."""
    # Each path's throughput over all its rounds: every call of the path over the whole time it took
    # (each round has the same number of calls, so the harmonic mean of the rounds' rates). Rounds
    # alternate the order of the paths, so the machine's drift within a run falls on all of them alike.
    whole = {k: statistics.harmonic_mean(v) for k, v in rates.items()}
    direct_rate, proxied_rate, fwd_rate = (whole[k] for k in ("direct", "proxied", "forwarder"))
    per_round = [p / f for p, f in zip(rates["proxied"], rates["forwarder"], strict=True)]
    best_of = max(rates["proxied"]) / max(rates["forwarder"])
    per_call = args.rounds * args.calls
    ms = {k: v / per_call * 1000 for k, v in cpu.items()}
    d50, p50 = statistics.median(lat[0]), statistics.median(lat[1])
    d99, p99 = quantile(lat[0], 0.99), quantile(lat[1], 0.99)
    print(
        f"# db={args.db} pairs={args.pairs} calls={args.calls} concurrency={args.concurrency} "
        f"rounds={args.rounds}"
    )
    print(f"# sequential direct p50={d50:.2f}ms p99={d99:.2f}ms; proxied p50={p50:.2f}ms p99={p99:.2f}ms")
    shown = " ".join(f"{k}={[round(r) for r in v]}" for k, v in rates.items())
    print(f"# concurrent calls/s {shown}")
    shown = " ".join(f"{k}={v:.3f}ms" for k, v in ms.items())
    print(f"# cpu per call: {shown}")
    if control is not None:
        print(
            f"# control agent (TCP_NODELAY, one write): sequential p50 direct={control[0]:.2f}ms "
            f"proxied={control[1]:.2f}ms added={control[1] - control[0]:.2f}ms"
        )
    print(
        f"# proxied/forwarder per round (adjacent runs): {[round(r, 3) for r in per_round]}; "
        f"best round of each (the estimator until session 12): {best_of:.3f}"
    )
    print(
        f"# against direct: proxied ratio={proxied_rate / direct_rate:.3f} "
        f"forwarder ratio={fwd_rate / direct_rate:.3f}"
    )
    ours_rate = whole["forwarder_ours"]
    print(
        f"# the floor of our own stack (the same forwarder on the proxy's agent client): "
        f"ratio={proxied_rate / ours_rate:.3f} cpu_ratio={ms['server'] / ms['forwarder_ours']:.2f} "
        f"forwarder_ours_cpu_ms={ms['forwarder_ours']:.3f}"
    )
    print(
        f"RESULT a2a-forwarder ratio={proxied_rate / fwd_rate:.3f} "
        f"cpu_ratio={ms['server'] / ms['forwarder']:.2f} "
        f"p50_added_ms={p50 - d50:.2f} p99_added_ms={p99 - d99:.2f} "
        f"server_cpu_ms={ms['server']:.3f} forwarder_cpu_ms={ms['forwarder']:.3f}"
    )


def start_profiler(pid: int, workdir: Path) -> subprocess.Popen[bytes]:
    out = workdir / "a2a-profile.txt"
    cmd = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--output",
        str(out),
        "--rate",
        "200",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.db == "sqlite":
        db_file = workdir / f"a2a-{os.getpid()}.db"
        try:
            await run(args, f"sqlite:///{db_file}", workdir)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(str(db_file) + suffix).unlink(missing_ok=True)
        return
    name = f"bench_a2a_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await admin_exec(args.pg, f'CREATE DATABASE "{name}"')
    try:
        await run(args, args.pg.rsplit("/", 1)[0] + "/" + name, workdir)
    finally:
        await admin_exec(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--pairs", type=int, default=300, help="sequential direct+proxied pairs")
    p.add_argument("--calls", type=int, default=2000, help="calls per concurrent run")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5, help="concurrent rounds, alternating the path order")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument(
        "--pg", default=os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    p.add_argument(
        "--redis", default="", help="REDIS_URL for the server: the layout of replicas (shared cache, bus)"
    )
    p.add_argument("--no-control", action="store_true", help="skip the control-agent latency run")
    p.add_argument("--profile", action="store_true", help="py-spy the server: <workdir>/a2a-profile.txt")
    p.add_argument("--workdir", default=str(ROOT / "data" / "bench"), help="server cwd and logs")
    return p.parse_args()


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except BenchError as e:
        raise SystemExit(f"bench failed: {e}") from None
