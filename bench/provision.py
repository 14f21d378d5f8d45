"""Provision-to-online of a real workspace against its floor (a bare container of the same image), in one run.

1. Start `python -m workspace_server serve` on a free loopback port: SQLite under a temp dir,
   WORKSPACE_BACKEND=docker with host networking, PLATFORM_URL pointing at itself, the orphan sweeper off
   (other containers on this engine are not ours).
2. Ours, N times: `POST /workspaces` (runtime `echo` → molecule/workspace-agent:latest) until its
   `WORKSPACE_ONLINE` frame arrives on the server's event stream (`GET /ws`, what the canvas listens to;
   the agent registered and the status is committed), then one `GET /workspaces/:id` checks it says
   `online` (after the clock stopped). Each workspace is purged afterwards.
3. Floor, N times, interleaved with ours: create + start a container of the same image on the host network
   through the same engine API (what `docker run -d` does), probe its port with a TCP connect every 2 ms
   and, once it accepts, send `message/send` until it answers 200. The container is removed afterwards.
   Both ends are taken to about a millisecond: ours is pushed, the floor's probe is 2 ms apart (it was a
   20 ms poll on both sides, which put up to 20 ms of waiting into each, and the few ms of server CPU of
   every `GET /workspaces/:id` poll onto the machine while the workspace was starting).
4. Print each sample, the server's CPU per workspace (create → online → purge; the machine is shared, so
   wall times move with other people's load, CPU much less) and
   `RESULT provision ratio=<ours_p50/bare_p50> ours_p50=<s> bare_p50=<s>`.

`--warm`: the same with the Docker backend's warm pool on (WARM_POOL_SIZE=2 for this image, tier 2): before
each sample the bench waits until a member has been up for a second (what a pool that keeps up with
creates looks like), so ours is a claim: rename, identity delivery, the agent's start in an interpreter that
already imported it, registration. Prints `RESULT provision-warm ratio=<ours_p50/bare_p50> ...` instead;
goal: ratio <= 0.25. The server's members are removed afterwards (a stopped server leaves them for the next).

`--profile` samples the server with py-spy (in .venv/bin) during the measured runs and writes collapsed
stacks to data/bench/provision-profile.txt.

Bounded: every sample has a deadline; a failure aborts the run with the reason. Goal: ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import psutil
import websockets

from workspace_server.provisioner.docker.pool_model import (
    POOL_LABEL,
    POOL_PREFIX,
    POOL_SCOPE_LABEL,
    pool_scope,
)

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "molecule/workspace-agent:latest"
ADMIN = "bench-admin"
SAMPLE_DEADLINE = 120.0  # seconds per sample
POLL = 0.002  # the bare side's probe interval (ours is pushed: the event stream)
PROFILE_OUT = ROOT / "data" / "bench" / "provision-profile.txt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WARM_ENV = {
    "WARM_POOL_SIZE": "2",
    "WARM_POOL_TIERS": "2",
    "WARM_POOL_INTERVAL": "0.2",
    "WARM_POOL_IMAGES": IMAGE,
}
MEMBER_SETTLE = 1.0  # seconds a member has been running before a warm sample claims it


def start_server(port: int, workdir: Path, warm: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir}/bench.db",
        "DATA_DIR": str(workdir / "data"),
        "CONFIGS_DIR": str(workdir / "configs"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PLATFORM_URL": f"http://127.0.0.1:{port}",
        "WORKSPACE_BACKEND": "docker",
        "DOCKER_NETWORK_MODE": "host",
        "ADMIN_TOKEN": ADMIN,
        "REDIS_URL": "",
        "RATE_LIMIT": "1000000",
        "ORPHAN_SWEEP_INTERVAL": "0",
        "MOLECULE_ENV": "",
        **(WARM_ENV if warm else {}),
    }
    log = open(workdir / "server.log", "wb")  # stays open for the server process
    return subprocess.Popen(
        [sys.executable, "-m", "workspace_server", "serve"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def start_profiler(pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling the server during the measured runs; collapsed stacks to PROFILE_OUT."""
    PROFILE_OUT.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(PROFILE_OUT)]
    spy = subprocess.Popen([*cmd, "--rate", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # let it attach before the runs start
    return spy


def stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    spy.wait(timeout=60)


async def wait_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SAMPLE_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up (see its server.log)")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/health")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise SystemExit("server did not become healthy")


class Online:
    """The server's event stream (`GET /ws`, what the canvas listens to): when each workspace's
    WORKSPACE_ONLINE (or WORKSPACE_PROVISION_FAILED) frame arrived, by `time.perf_counter()`. The frame is
    sent after the status is committed, so "ours" ends when the server says online, with no poll
    interval in it and no poll requests loading the server while it provisions."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[str, float]] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self, base_url: str) -> None:
        ready = asyncio.Event()
        self.task = asyncio.create_task(self._listen(base_url.replace("http://", "ws://") + "/ws", ready))
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(0.2)  # the server adds the client to its hub just after the handshake

    async def _listen(self, url: str, ready: asyncio.Event) -> None:
        async with websockets.connect(url, max_size=None) as ws:
            ready.set()
            async for frame in ws:
                now = time.perf_counter()
                ev = json.loads(frame)
                if ev.get("event") in ("WORKSPACE_ONLINE", "WORKSPACE_PROVISION_FAILED"):
                    self.at.setdefault(str(ev.get("workspace_id")), (ev["event"], now))
                    self.changed.set()

    async def wait(self, wid: str, deadline: float) -> tuple[str, float]:
        while wid not in self.at:
            if self.task is not None and self.task.done():
                raise SystemExit(f"the event stream ended: {self.task.exception()!r}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.perf_counter()))
            if time.perf_counter() > deadline:
                raise SystemExit(f"workspace {wid} not online within {SAMPLE_DEADLINE:.0f}s")
        return self.at[wid]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def ours_once(client: httpx.AsyncClient, online: Online, n: int) -> float:
    t0 = time.perf_counter()
    r = await client.post("/workspaces", json={"name": f"bench-{n}", "runtime": "echo", "tier": 2})
    if r.status_code != 201:
        raise SystemExit(f"create failed: {r.status_code} {r.text}")
    wid = r.json()["id"]
    try:
        event, at = await online.wait(wid, t0 + SAMPLE_DEADLINE)
        view = (await client.get(f"/workspaces/{wid}")).json()  # after the clock stopped: a check only
        if event != "WORKSPACE_ONLINE" or view["status"] != "online":
            raise SystemExit(f"workspace {wid}: {event}, status {view['status']}")
        return at - t0
    finally:
        await client.delete(f"/workspaces/{wid}?purge=true")


def message_send() -> dict[str, Any]:
    parts = [{"kind": "text", "text": "ping"}]
    return {"jsonrpc": "2.0", "id": "1", "method": "message/send", "params": {"message": {"parts": parts}}}


async def bare_once(engine: docker.DockerClient, http: httpx.AsyncClient) -> float:
    port = free_port()
    env = {
        "WORKSPACE_ID": str(uuid.uuid4()),
        "PLATFORM_URL": "http://127.0.0.1:9",  # nothing listens: registration fails, serving does not
        "A2A_PORT": str(port),
        "A2A_HOST": "127.0.0.1",
    }
    name = f"bench-bare-{uuid.uuid4().hex[:10]}"
    t0 = time.perf_counter()
    container = await asyncio.to_thread(
        engine.containers.run, IMAGE, name=name, environment=env, network_mode="host", detach=True
    )
    try:
        while True:
            if await listening(port):  # then the same request as before, answered once it serves
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.post(f"http://127.0.0.1:{port}/", json=message_send())).status_code == 200:
                        return time.perf_counter() - t0
            if time.perf_counter() - t0 > SAMPLE_DEADLINE:
                raise SystemExit("bare container never answered")
            await asyncio.sleep(POLL)
    finally:
        await asyncio.to_thread(container.remove, force=True)


async def listening(port: int) -> bool:
    """A TCP connect to the agent's port: refused (microseconds, no request built) until it listens."""
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    w.close()
    with contextlib.suppress(OSError):
        await w.wait_closed()
    return True


def pool_filter(workdir: Path) -> dict[str, Any]:
    scope = pool_scope(f"sqlite:///{workdir}/bench.db", str(workdir / "data"))
    return {"label": [f"{POOL_LABEL}=1", f"{POOL_SCOPE_LABEL}={scope}"]}


async def wait_member(engine: docker.DockerClient, workdir: Path) -> None:
    """Until a member of the bench server's pool has been running for MEMBER_SETTLE seconds."""
    deadline = time.monotonic() + SAMPLE_DEADLINE
    while time.monotonic() < deadline:
        rows = await asyncio.to_thread(engine.api.containers, filters=pool_filter(workdir))
        for row in rows:
            if any(n.lstrip("/").startswith(POOL_PREFIX) for n in row.get("Names") or []):
                info = await asyncio.to_thread(engine.api.inspect_container, row["Id"])
                started = info["State"].get("StartedAt", "")
                if info["State"].get("Running") and _age(started) >= MEMBER_SETTLE:
                    return
        await asyncio.sleep(0.1)
    raise SystemExit("the warm pool never filled")


def _age(started_at: str) -> float:
    stamp = datetime.fromisoformat(started_at[:26].rstrip("Z") + "+00:00")
    return (datetime.now(UTC) - stamp).total_seconds()


def remove_members(engine: docker.DockerClient, workdir: Path) -> None:
    for row in engine.api.containers(all=True, filters=pool_filter(workdir)):
        engine.api.remove_container(row["Id"], force=True)
    for vol in engine.volumes.list(filters={"dangling": True}):
        if vol.name.startswith(POOL_PREFIX):
            vol.remove(force=True)


async def main(args: argparse.Namespace) -> None:
    engine = docker.from_env(timeout=120)
    engine.images.get(IMAGE)  # fails fast without `make runtime-image`
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-provision-") as tmp:
        proc = start_server(port, Path(tmp), args.warm)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        online = Online()
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client,
                httpx.AsyncClient(timeout=2) as http,
            ):
                await wait_healthy(client, proc)
                await online.start(f"http://127.0.0.1:{port}")
                if args.warm:
                    await wait_member(engine, Path(tmp))
                # warm-up: first-use costs (network setup, imports) on both sides
                await ours_once(client, online, -1)
                await bare_once(engine, http)
                ours, bare = [], []
                server = psutil.Process(proc.pid)
                spy = start_profiler(proc.pid) if args.profile else None
                cpu = 0.0
                try:
                    for n in range(args.runs):
                        if args.warm:
                            await wait_member(engine, Path(tmp))
                        before = cpu_seconds(server)
                        ours.append(await ours_once(client, online, n))
                        cpu += cpu_seconds(server) - before
                        bare.append(await bare_once(engine, http))
                        print(f"# run {n}: ours={ours[-1]:.3f}s bare={bare[-1]:.3f}s", flush=True)
                finally:
                    if spy is not None:
                        stop_profiler(spy)
                print(f"# server_cpu_ms_per_workspace={1000 * cpu / args.runs:.1f}")
        finally:
            await online.stop()
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            if args.warm:
                remove_members(engine, Path(tmp))
            engine.close()
    o, b = statistics.median(ours), statistics.median(bare)
    label = "provision-warm" if args.warm else "provision"
    print(f"RESULT {label} ratio={o / b:.2f} ours_p50={o:.3f} bare_p50={b:.3f}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="samples of each (at least 5)")
    ap.add_argument("--warm", action="store_true", help="with the warm pool on: RESULT provision-warm")
    ap.add_argument("--profile", action="store_true", help=f"py-spy the server into {PROFILE_OUT}")
    args = ap.parse_args()
    args.runs = max(5, args.runs)
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
