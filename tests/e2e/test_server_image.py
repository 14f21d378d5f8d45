"""The server's own image (issue 14 §5): built with `images/build-server-image.sh` (what `make
server-image` runs; cached, so seconds when nothing changed), then run as a container that drives real
agent containers through create → online → A2A → delete.

Two layouts, one test each:
- host networking, on Postgres and Redis. Both listen on the host's 127.0.0.1 only, which a container on a
  bridge cannot reach, so the DB-backed server shares the host's network; it then reaches its agents as a
  server outside Docker does (host-network agents on loopback ports: HOST=127.0.0.1 selects that);
- a user-defined bridge network, on SQLite in the container's own /data (no host service needed): the
  server is detected as in Docker (/.dockerenv), joins the agents' network itself, dials each agent by
  container name, and the agents call it by its own container name.
And the warm pool in the second layout: a non-root server sees no host dirs, so its members take engine
volumes (pool_engine.py), and a claimed (renamed) member must be dialled by its new name.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from tests.conftest import REDIS_URL, _port_open, free_port, need, truncate_all
from tests.integration.orchestrator_support import ADMIN, AUTH, remove_instances
from tests.integration.provisioner_support import docker_client, message_send, need_agent_image
from workspace_server.config import Settings

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]  # a cold image build takes minutes

REPO = Path(__file__).resolve().parents[2]
IMAGE = "molecule/workspace-server:latest"
WAIT_SECONDS = 90.0  # ends a hang; nothing is timed


@pytest.fixture(scope="session")
def server_image() -> Iterator[Any]:
    """The engine, with the server image built from this checkout (layer cache: a no-op rebuild when
    nothing changed, so it always runs and a stale image is never tested)."""
    client = docker_client()
    need_agent_image(client)
    started = time.monotonic()
    # the test's own interpreter fetches the wheels (the script wants a CPython 3.11 with pip)
    env = {**os.environ, "PYTHON": sys.executable, "SERVER_IMAGE": IMAGE}
    run = subprocess.run(  # a fixed script of this repository
        ["bash", str(REPO / "images" / "build-server-image.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert run.returncode == 0, f"server image build failed:\n{run.stdout}\n{run.stderr}"
    print(f"server image built in {time.monotonic() - started:.1f}s")
    yield client
    client.close()


def run_server(client: Any, name: str, env: dict[str, str], **kwargs: Any) -> Any:
    """Start the server image with the engine's socket mounted, the way docs/operations.md runs it."""
    base = {
        "WORKSPACE_BACKEND": "docker",
        "ADMIN_TOKEN": ADMIN,
        "ORPHAN_SWEEP_INTERVAL": "0",  # other suites' agents share this engine
    }
    return client.containers.run(
        IMAGE,
        name=name,
        detach=True,
        environment={**base, **env},
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        **kwargs,
    )


async def wait_healthy_http(url: str, server: Any) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            server.reload()
            if server.status != "running" or time.monotonic() > deadline:
                raise AssertionError(f"server never answered /health:\n{logs(server)}")
            await asyncio.sleep(0.2)


def logs(server: Any) -> str:
    try:
        return str(server.logs(tail=60).decode("utf-8", "replace"))
    except docker.errors.APIError:
        return "(no logs)"


async def lifecycle(client: Any, url: str, server: Any, ids: list[str], warm: str = "") -> dict[str, Any]:
    """create → online → A2A through the server → delete; returns the online view."""
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        r = await http.post("/workspaces", json={"name": "Boxed Echo", "runtime": "echo", "tier": 2})
        assert r.status_code == 201, r.text
        wid = str(r.json()["id"])
        ids.append(wid)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            view = (await http.get(f"/workspaces/{wid}")).json()
            if view["status"] == "online":
                break
            if view["status"] == "failed" or time.monotonic() > deadline:
                raise AssertionError(f"workspace {view['status']}: {view}\n{logs(server)}")
            await asyncio.sleep(0.2)
        r = await http.post(f"/workspaces/{wid}/a2a", json=message_send("through the boxed server"))
        assert r.status_code == 200, f"{r.text}\n{logs(server)}"
        assert r.json()["result"]["parts"][0]["text"] == "through the boxed server"
        agent = client.containers.get(f"ws-{wid[:12]}")
        if warm:  # the pool member it claimed, not a container of its own
            assert agent.id == warm and agent.labels.get("molecule.pool") == "1", agent.name
        view["agent_env"] = dict(e.split("=", 1) for e in agent.attrs["Config"]["Env"])
        view["agent_networks"] = sorted(agent.attrs["NetworkSettings"]["Networks"])
        r = await http.delete(f"/workspaces/{wid}")
        assert (r.status_code, r.json()) == (200, {"cascade_deleted": 0, "status": "removed"})
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(f"ws-{wid[:12]}")
        return dict(view)


def process_status(server: Any) -> dict[str, str]:
    """Uid/Gid/Groups of the server's PID 1 (the entrypoint exec'd the server in its place)."""
    res = server.exec_run(["cat", "/proc/1/status"])
    lines = res.output.decode().splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines) if k in ("Uid", "Gid", "Groups")}


async def cleanup(client: Any, server: Any, ids: list[str]) -> None:
    try:
        server.remove(force=True, v=True)
    except docker.errors.APIError:
        pass
    await remove_instances(Settings(WORKSPACE_BACKEND="docker"), ids)


async def test_host_network_server_on_postgres_and_redis(server_image: Any, pg_database: str | None) -> None:
    client = server_image
    need("Postgres on 127.0.0.1:5432", pg_database is not None)
    need("Redis on 127.0.0.1:6379", _port_open("127.0.0.1", 6379))
    assert pg_database is not None
    await truncate_all(pg_database)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": pg_database,
        "REDIS_URL": REDIS_URL,
        "HOST": "127.0.0.1",  # loopback only: agents share the host network too (DOCKER_NETWORK_MODE auto)
        "PORT": str(port),
    }
    server = run_server(client, f"wsi-host-{uuid.uuid4().hex[:8]}", env, network_mode="host")
    ids: list[str] = []
    try:
        await wait_healthy_http(url, server)
        status = process_status(server)
        sock_gid = str(os.stat("/var/run/docker.sock").st_gid)
        assert status["Uid"].split() == ["1000"] * 4, status  # non-root, no way back
        assert sock_gid in status["Groups"].split(), status  # joined the socket's group at start
        view = await lifecycle(client, url, server, ids)
        assert view["url"].startswith("http://127.0.0.1:")  # dialled on the host's loopback
        assert view["agent_env"]["PLATFORM_URL"] == url
    finally:
        await cleanup(client, server, ids)


async def test_bridge_network_server_reaches_agents_by_name(server_image: Any) -> None:
    client = server_image
    tag = uuid.uuid4().hex[:8]
    net, name = f"wsi-net-{tag}", f"wsi-server-{tag}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # SQLite in the container's own /data; the server starts on the default bridge and joins `net` (the
    # agents' network, created by the backend) on its first provision
    server = run_server(
        client, name, {"DOCKER_NETWORK": net}, ports={"8080/tcp": ("127.0.0.1", port)}, network="bridge"
    )
    ids: list[str] = []
    try:
        await wait_healthy_http(url, server)
        view = await lifecycle(client, url, server, ids)
        assert view["agent_networks"] == [net]
        assert view["agent_env"]["PLATFORM_URL"] == f"http://{name}:8080"  # the agent called us by name
        server.reload()
        assert net in server.attrs["NetworkSettings"]["Networks"]
        assert "this server runs in container " + name in logs(server)
        # the image's HEALTHCHECK (every 10 s) has reported by now, or does within the next interval
        deadline = time.monotonic() + 30
        while (server.attrs["State"].get("Health") or {}).get("Status") != "healthy":
            assert time.monotonic() < deadline, server.attrs["State"].get("Health")
            await asyncio.sleep(1)
            server.reload()
    finally:
        await cleanup(client, server, ids)
        try:
            client.networks.get(net).remove()
        except docker.errors.APIError:
            pass


async def test_bridge_network_server_claims_warm_members(server_image: Any) -> None:
    """The non-root server image on a bridge network with a pool of one: its member has an engine volume
    at /configs (no host dirs for a non-root server), a create claims it, and the server dials the
    claimed member by its new name (A2A through the server); the pool refills."""
    client = server_image
    tag = uuid.uuid4().hex[:8]
    net, name = f"wsi-pool-net-{tag}", f"wsi-pool-server-{tag}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"DOCKER_NETWORK": net, "WARM_POOL_SIZE": "1", "WARM_POOL_TIERS": "2", "WARM_POOL_INTERVAL": "0.5"}
    server = run_server(client, name, env, ports={"8080/tcp": ("127.0.0.1", port)}, network="bridge")
    ids: list[str] = []

    def members() -> list[Any]:
        found = client.containers.list(filters={"label": "molecule.pool=1", "network": net})
        return [c for c in found if c.name.startswith("molecule-pool-")]

    try:
        await wait_healthy_http(url, server)
        deadline = time.monotonic() + WAIT_SECONDS
        while not (got := await asyncio.to_thread(members)):
            assert time.monotonic() < deadline, f"no pool member:\n{logs(server)}"
            await asyncio.sleep(0.3)
        (member,) = got
        assert member.labels.get("molecule.pool.mountpoint"), member.labels  # the engine-volume mode
        view = await lifecycle(client, url, server, ids, warm=member.id)
        assert view["agent_networks"] == [net]
        assert view["agent_env"]["PLATFORM_URL"] == f"http://{name}:8080"
        deadline = time.monotonic() + WAIT_SECONDS
        while not await asyncio.to_thread(members):  # refilled
            assert time.monotonic() < deadline, f"the pool was not refilled:\n{logs(server)}"
            await asyncio.sleep(0.3)
    finally:
        await cleanup(client, server, ids)
        # the unclaimed members (a stopped server leaves them for its next start), their volumes, the network
        for c in client.containers.list(all=True, filters={"label": "molecule.pool=1", "network": net}):
            c.remove(force=True)
            if c.name.startswith("molecule-pool-"):
                for suffix in ("-configs", "-workspace"):  # its /workspace volume too (it left one behind)
                    try:
                        client.volumes.get(f"{c.name}{suffix}").remove(force=True)
                    except docker.errors.APIError:
                        pass
        try:
            client.networks.get(net).remove()
        except docker.errors.APIError:
            pass
