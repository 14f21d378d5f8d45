"""The production layout of docs/operations.md, started for real: two `serve` replicas on one Postgres +
Redis behind nginx running deploy/nginx/workspace-server.conf as shipped (only the upstream addresses and
the listen port are replaced). Through nginx: requests reach both replicas, a WebSocket and an SSE stream
get every event once and at once (upgrade and buffering settings), and a replica killed with -9 leaves
nothing unanswered.

Postgres only (replicas); nginx is installed by .ci/run (`nginx-light`), so CI never skips this.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import free_port, need
from tests.integration.replica_support import (
    ADMIN_H,
    Replica,
    poll,
    replica_env,
    seed,
    sse_events,
    wait_all_ready,
)

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "workspace-server.conf"
WAIT = 30.0


def nginx_binary() -> str | None:
    return shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def render(port: int, upstreams: list[str]) -> str:
    """The shipped site config with our replicas and port; everything else exactly as documented."""
    text = CONF.read_text(encoding="utf-8")
    servers = "".join(f"    server {u} max_fails=1 fail_timeout=5s;\n" for u in upstreams)
    text, n = re.subn(r"(?m)^    server 127\.0\.0\.1:\d+ [^\n]*\n(?:    server [^\n]*\n)*", servers, text)
    assert n == 1, "the upstream block of deploy/nginx/workspace-server.conf changed shape"
    text, n = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{port};", text)
    assert n == 1, "the listen line of deploy/nginx/workspace-server.conf changed shape"
    return text


class Nginx:
    def __init__(self, binary: str, prefix: Path, upstreams: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix.mkdir()
        (prefix / "site.conf").write_text(render(self.port, upstreams), encoding="utf-8")
        temp = "".join(
            f"{kind}_temp_path {prefix / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        main = (
            ("user root root;\n" if os.geteuid() == 0 else "")  # workers can use the test's private dirs
            + f"worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
            + "events { worker_connections 256; }\n"
            + f"http {{\naccess_log off;\n{temp}include {prefix / 'site.conf'};\n}}\n"
        )
        (prefix / "nginx.conf").write_text(main, encoding="utf-8")
        self.error_log = prefix / "error.log"
        argv = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(self.error_log)]
        check = subprocess.run([*argv, "-t"], capture_output=True, timeout=30, check=False)
        assert check.returncode == 0, check.stderr.decode()
        self.proc = subprocess.Popen([*argv, "-g", "daemon off;"])  # fixed argv, no shell

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.error_log.read_text(errors="replace")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("nginx did not answer")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def layout(
    request: pytest.FixtureRequest, db_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[Nginx, list[Replica]]]:
    if request.node.callspec.params.get("db_url") == "sqlite":
        pytest.skip("replicas share state through Postgres + Redis; the SQLite default is single-process")
    binary = nginx_binary()
    need("nginx (apt-get install nginx-light; .ci/run installs it)", binary is not None)
    assert binary is not None
    data = tmp_path / "data"
    group = [
        Replica(name, lambda port: replica_env(db_url, redis_url, data, port), tmp_path)
        for name in ("a", "b")
    ]
    proxy: Nginx | None = None
    try:
        wait_all_ready(group)
        proxy = Nginx(binary, tmp_path / "nginx", [f"127.0.0.1:{r.port}" for r in group])
        proxy.wait_ready()
        yield proxy, group
    finally:
        if proxy is not None:
            proxy.stop()
        for r in group:
            r.stop()


async def test_two_replicas_behind_the_shipped_nginx_config(
    layout: tuple[Nginx, list[Replica]], db_url: str
) -> None:
    proxy, (a, b) = layout
    ws_id, _ = await seed(db_url)
    ws_seen: list[str] = []
    sse_seen: list[tuple[str, float]] = []

    async def read_ws() -> None:
        async with connect(proxy.url.replace("http://", "ws://") + "/ws") as sock:
            while True:
                frame = json.loads(await sock.recv())
                if frame["workspace_id"] == ws_id:
                    ws_seen.append(frame["payload"]["message"])

    async def read_sse(client: httpx.AsyncClient) -> None:
        async for frame in sse_events(client, "/events/stream"):
            if frame["data"].get("workspace_id") == ws_id:
                sse_seen.append((frame["data"]["message"], time.monotonic()))

    async def notify(client: httpx.AsyncClient, text: str) -> None:
        r = await client.post(f"/workspaces/{ws_id}/notify", json={"message": text}, headers=ADMIN_H)
        assert r.status_code == 200, r.text

    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=WAIT) as http,
        httpx.AsyncClient(base_url=proxy.url, timeout=WAIT) as stream_client,
    ):
        readers = [asyncio.create_task(read_ws()), asyncio.create_task(read_sse(stream_client))]
        try:

            async def subscribed() -> bool:
                await notify(http, "warm-up")
                await asyncio.sleep(0.2)
                return "warm-up" in ws_seen and any(m == "warm-up" for m, _ in sse_seen)

            await poll(subscribed, "both streams through nginx", WAIT)
            ws_seen.clear()
            sse_seen.clear()
            # Round robin: the four requests land on both replicas; each event reaches each stream once,
            # and promptly (the config turns proxy buffering off for the streams; the server's SSE
            # answers also say `X-Accel-Buffering: no`, so this holds with either alone).
            sent_at = {}
            for i in range(4):
                sent_at[f"e{i}"] = time.monotonic()
                await notify(http, f"e{i}")
            await poll(lambda: _ready(len(ws_seen) >= 4 and len(sse_seen) >= 4), "four events", WAIT)
            await asyncio.sleep(0.5)
        finally:
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        assert ws_seen == ["e0", "e1", "e2", "e3"]
        assert [m for m, _ in sse_seen] == ["e0", "e1", "e2", "e3"]
        assert max(at - sent_at[m] for m, at in sse_seen) < 2.0, "SSE frames were held back"

        # The terminal's upgrade passes too: without a backend the server refuses the handshake with its
        # 503 (a request that lost its Upgrade header on the way would be a plain GET: 404).
        terminal = proxy.url.replace("http://", "ws://") + f"/workspaces/{ws_id}/terminal"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(terminal, additional_headers=ADMIN_H):
                pass
        assert refused.value.response.status_code == 503

        # Both replicas served through nginx (each writes its own access log), then one dies with -9:
        # nginx passes every request on to the other.
        for r in (a, b):
            assert f"/workspaces/{ws_id}/notify" in r.log_path.read_text(errors="replace"), r.name
        b.kill()
        for _ in range(10):
            r = await http.get(f"/workspaces/{ws_id}")
            assert r.status_code == 200, proxy.error_log.read_text(errors="replace")[-3000:]
            await notify(http, "after kill")


async def _ready(value: object) -> object:
    return value
