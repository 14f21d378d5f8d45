"""Heartbeat throughput of a real server against its floor (the bare UPDATE), in one run.

1. Create a throwaway Postgres database; start `python -m workspace_server serve` on a free loopback
   port against it (no ADMIN_TOKEN, WORKSPACE_BACKEND=none, RATE_LIMIT high, in-process bus).
2. N simulated agents register (`url: http://localhost:<port>`) and keep the token they are given.
3. One warm-up round, then R measured rounds of heartbeats (N*R requests, C in flight, C persistent
   connections of the minimal client in rawhttp.py — httpx would cost as much CPU as the server).
4. Floor: the same N*R single-row UPDATEs the heartbeat route issues (same columns and guard), straight
   through asyncpg, C in flight, on as many connections as the server's engine may open (20 + 10). The
   server is stopped (SIGSTOP) meanwhile: it takes no CPU from the floor.
5. Steps 3 and 4 alternate A times (`--alternations`): on a shared machine other people's load comes and
   goes, and a single pair can land one phase in a quiet moment and the other in a busy one. Each pair's
   figures are printed; the RESULT line takes the best of each side (rate and floor alike).
   Server RSS is read with psutil at the end.
6. Print `RESULT heartbeat rate=<hb/s> rss_mb=<MB> floor=<updates/s> ratio=<ours/floor>`; drop the database.

Bounded in count and time: every phase has a deadline; the run fails rather than hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import psutil
from rawhttp import RawPool, encode_post

ROOT = Path(__file__).resolve().parent.parent
SERVER_DB_CONNECTIONS = 30  # workspace_server.db.engine: pool_size=20 + max_overflow=10
PHASE_DEADLINE = 600.0  # seconds; any phase slower than this aborts the run

# The heartbeat route's UPDATE (registry/store.py apply_heartbeat), spend left alone as for a 0 report.
FLOOR_UPDATE = """
UPDATE workspaces SET last_heartbeat_at=$2, last_error_rate=$3, last_sample_error=$4, active_tasks=$5,
       uptime_seconds=$6, current_task=$7, updated_at=$2, idle_since=COALESCE(idle_since, $2)
WHERE id=$1 AND status != 'removed'
"""


@dataclass
class Agent:
    id: str
    token: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def db_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def admin_exec(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start_server(database_url: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "REDIS_URL", "MOLECULE_ENV")}
    env.update(
        DATABASE_URL=database_url,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKSPACE_BACKEND="none",
        RATE_LIMIT="100000000",
        PYTHONPATH=str(ROOT / "src"),
    )
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "workspace_server", "serve"],
        cwd=str(log_path.parent),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def start_profiler(pid: int, workdir: Path) -> subprocess.Popen[bytes]:
    """py-spy (pip install py-spy) sampling the server during the measured phase; collapsed stacks out."""
    out = workdir / "profile.txt"
    cmd = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", "200"]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # let it attach before the load starts
    return spy


def stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    spy.wait(timeout=60)


async def wait_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} during start-up")
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("server did not become healthy within 60 s")


async def run_bounded(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> float:
    """Run the jobs in order with `concurrency` workers; seconds taken."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:  # a shared iterator: each job is taken by exactly one worker
            await job()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), PHASE_DEADLINE)
    return time.perf_counter() - started


async def register_all(client: httpx.AsyncClient, agents: list[Agent], port: int, conc: int) -> None:
    def job(agent: Agent) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            r = await client.post(
                "/registry/register",
                json={
                    "id": agent.id,
                    "url": f"http://localhost:{port}",
                    "agent_card": {"name": f"bench-{agent.id[:8]}", "skills": []},
                },
            )
            if r.status_code != 200 or "auth_token" not in r.json():
                raise SystemExit(f"register failed: {r.status_code} {r.text[:200]}")
            agent.token = r.json()["auth_token"]

        return go

    await run_bounded([job(a) for a in agents], conc)


def heartbeat_jobs(
    pool: RawPool, host: str, agents: list[Agent], rounds: int, first_round: int
) -> list[Callable[[], Awaitable[None]]]:
    def job(agent: Agent, rnd: int) -> Callable[[], Awaitable[None]]:
        body = {
            "workspace_id": agent.id,
            "error_rate": 0.0,
            "sample_error": "",
            "active_tasks": 0,
            "uptime_seconds": 30 * rnd,
            "current_task": "",
        }
        raw = encode_post(host, "/registry/heartbeat", body, {"Authorization": f"Bearer {agent.token}"})

        async def go() -> None:
            status, resp = await pool.request(raw)
            if status != 200:
                raise SystemExit(f"heartbeat failed: {status} {resp[:200]!r}")

        return go

    return [job(a, first_round + r) for r in range(rounds) for a in agents]


def floor_jobs(pool: asyncpg.Pool, agents: list[Agent], rounds: int) -> list[Callable[[], Awaitable[None]]]:
    def job(agent: Agent, rnd: int) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            async with pool.acquire() as conn:
                await conn.execute(FLOOR_UPDATE, agent.id, datetime.now(UTC), 0.0, "", 0, 30 * rnd, "")

        return go

    return [job(a, r) for r in range(rounds) for a in agents]


async def measure_server(
    args: argparse.Namespace, database_url: str, workdir: Path, floor: FloorRunner
) -> tuple[list[float], list[float], float]:
    """(heartbeats/s of each alternation, floor UPDATEs/s of each alternation, server RSS in MB)."""
    port = free_port()
    proc = start_server(database_url, port, workdir / "server.log")
    # keep-alive shorter than uvicorn's 5 s, so the client never reuses a connection the server is closing
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency, keepalive_expiry=2.0
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30.0
        ) as client:
            await wait_healthy(client, proc)
            agents = [Agent(str(uuid.uuid4())) for _ in range(args.agents)]
            await register_all(client, agents, port, args.concurrency)
        host = f"127.0.0.1:{port}"
        server, me = psutil.Process(proc.pid), psutil.Process()
        await floor.start(agents)
        rates: list[float] = []
        floors: list[float] = []
        server_cpu = my_cpu = 0.0
        n = wall = 0.0
        for alternation in range(args.alternations):
            # a fresh pool each time: the server closed the last one's idle connections while it was stopped
            pool = RawPool("127.0.0.1", port, args.concurrency)
            first_round = 1 + alternation * args.rounds
            await run_bounded(
                heartbeat_jobs(pool, host, agents, 1, first_round - 1), args.concurrency
            )  # warm
            jobs = heartbeat_jobs(pool, host, agents, args.rounds, first_round)
            spy = start_profiler(proc.pid, workdir) if args.profile and alternation == 0 else None
            cpu0, mine0 = cpu_seconds(server), cpu_seconds(me)
            seconds = await run_bounded(jobs, args.concurrency)
            server_cpu += cpu_seconds(server) - cpu0
            my_cpu += cpu_seconds(me) - mine0
            pool.close()
            if spy is not None:
                stop_profiler(spy)
            n += len(jobs)
            wall += seconds
            rates.append(len(jobs) / seconds)
            proc.send_signal(signal.SIGSTOP)  # the floor runs alone, as if the server were not there
            try:
                floors.append(await floor.measure())
            finally:
                proc.send_signal(signal.SIGCONT)
            print(
                f"# alternation {alternation + 1}: rate={rates[-1]:.1f} floor={floors[-1]:.1f} "
                f"ratio={rates[-1] / floors[-1]:.3f}"
            )
        rss_mb = server.memory_info().rss / 1e6
        # CPU per request is steadier than a rate on a shared machine; the client's own cost shows
        # when the load generator, not the server, is the limit.
        print(
            f"# server_cpu_ms_per_hb={server_cpu / n * 1000:.3f} "
            f"client_cpu_ms_per_hb={my_cpu / n * 1000:.3f} wall_s={wall:.1f}"
        )
        return rates, floors, rss_mb
    finally:
        await floor.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


class FloorRunner:
    """UPDATEs/s of the bare heartbeat statement on the rows the agents registered."""

    def __init__(self, args: argparse.Namespace, database_url: str) -> None:
        self.args = args
        self.database_url = database_url
        self.pool: asyncpg.Pool | None = None
        self.agents: list[Agent] = []

    async def start(self, agents: list[Agent]) -> None:
        size = SERVER_DB_CONNECTIONS
        self.pool = await asyncpg.create_pool(self.database_url, min_size=size, max_size=size)
        self.agents = agents
        await run_bounded(floor_jobs(self.pool, agents, 1), self.args.concurrency)  # warm-up

    async def measure(self) -> float:
        assert self.pool is not None
        jobs = floor_jobs(self.pool, self.agents, self.args.rounds)
        seconds = await run_bounded(jobs, self.args.concurrency)
        return len(jobs) / seconds

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


async def main(args: argparse.Namespace) -> None:
    name = f"bench_hb_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    await admin_exec(args.pg, f'CREATE DATABASE "{name}"')
    try:
        url = db_url(args.pg, name)
        rates, floors, rss_mb = await measure_server(args, url, workdir, FloorRunner(args, url))
    finally:
        await admin_exec(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        f"# agents={args.agents} rounds={args.rounds} concurrency={args.concurrency} "
        f"heartbeats={args.agents * args.rounds} per phase, alternations={args.alternations}; "
        f"RESULT takes the best rate and the best floor"
    )
    rate, floor = max(rates), max(floors)
    print(f"RESULT heartbeat rate={rate:.1f} rss_mb={rss_mb:.1f} floor={floor:.1f} ratio={rate / floor:.3f}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5, help="measured heartbeat rounds (after one warm-up)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument(
        "--alternations", type=int, default=3, help="server/floor measurement pairs; RESULT: best of each"
    )
    p.add_argument(
        "--pg", default=os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    p.add_argument("--profile", action="store_true", help="py-spy the server: <workdir>/profile.txt")
    p.add_argument("--workdir", default=str(ROOT / "data" / "bench"), help="server cwd and log")
    return p.parse_args()


if __name__ == "__main__":
    try:
        import uvloop  # the server runs on uvloop (uvicorn[standard]); give the client the same loop
    except ImportError:
        asyncio.run(main(parse_args()))
    else:
        uvloop.run(main(parse_args()))
