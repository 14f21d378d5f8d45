"""The Docker backend's warm pool on a real engine (provisioner/docker/pool.py): it fills to size, a create
claims a member (which comes online and answers A2A), concurrent creates get distinct members, it refills,
a restarted server adopts its members and a disabled pool removes them, an image refresh drains it, with
the pool off a create takes the cold path, and on a user-defined bridge network a claimed (renamed) member
answers by its new name; without host dirs (the non-root server image) members take engine volumes.
SQLite only: the pool keeps no state in the database.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.integration.orchestrator_support import (
    Platform,
    PlatformFactory,
    agent_reply,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from tests.integration.provisioner_support import (
    engine_fixture,  # noqa: F401 - registers the engine fixture
    message_send,
)
from workspace_server.provisioner.docker import DockerBackend, configs_volume, workspace_volume
from workspace_server.provisioner.docker import engine as engine_module
from workspace_server.provisioner.docker.pool_model import (
    POOL_BACKING_LABEL,
    POOL_LABEL,
    POOL_MOUNT_LABEL,
    POOL_PREFIX,
    POOL_SCOPE_LABEL,
    row_name,
)
from workspace_server.provisioner.docker.waiter import IDENTITY_FILE
from workspace_server.workspaces.files import workspace_config_dir

pytestmark = pytest.mark.docker

POOL = {"WARM_POOL_SIZE": 2, "WARM_POOL_TIERS": "2", "WARM_POOL_INTERVAL": 0.2}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ws.db"


@pytest.fixture(autouse=True)
def no_leftovers(engine: Any, db_url: str, tmp_path: Path) -> Iterator[None]:
    """After the servers stopped (the platform factory's teardown runs first): no member of this test's
    pool, claimed or not, and none of their volumes is left on the engine."""
    yield
    scope = DockerBackend(make_settings(db_url, tmp_path), client=engine)._pool_scope()
    for c in engine.containers.list(
        all=True, filters={"label": [f"{POOL_LABEL}=1", f"{POOL_SCOPE_LABEL}={scope}"]}
    ):
        c.remove(force=True)
    for v in engine.volumes.list(filters={"dangling": True}):
        if v.name.startswith(POOL_PREFIX):
            v.remove(force=True)


def members(engine: Any, p: Platform) -> list[dict[str, Any]]:
    """Rows of the unclaimed members of this server's pool (claimed ones are renamed `ws-…`). The list
    call's rows, not `containers.list` (it inspects each row after listing: a member the server removes
    meanwhile would be a 404)."""
    scope = p.ctx.backend._pool_scope()
    found = engine.api.containers(
        all=True, filters={"label": [f"{POOL_LABEL}=1", f"{POOL_SCOPE_LABEL}={scope}"]}
    )
    return [r for r in found if row_name(r).startswith(POOL_PREFIX)]


async def running_members(p: Platform, engine: Any, n: int) -> list[str]:
    async def check() -> list[str] | None:
        got = await asyncio.to_thread(members, engine, p)
        ids = [str(r["Id"]) for r in got if r.get("State") == "running"]
        return ids if len(got) == n and len(ids) == n else None

    return list(await p.wait_for(check, f"{n} running pool members"))


def workspace_container(engine: Any, wid: str) -> Any:
    return engine.containers.get(f"ws-{wid[:12]}")


async def test_fill_claim_concurrent_refill(platform_factory: PlatformFactory, engine: Any) -> None:
    p: Platform = await platform_factory("docker", **POOL)
    warm = await running_members(p, engine, 2)

    wid = await p.create("Warm Agent")
    view = await p.wait_status(wid, "online")
    c = workspace_container(engine, wid)
    assert c.id in warm and c.labels[POOL_LABEL] == "1"
    assert await agent_reply(view["url"], "warm hello") == "warm hello"
    r = await p.a2a(wid, "via the platform")
    assert r.status_code == 200 and r.json()["result"]["parts"][0]["text"] == "via the platform"
    # its configs are where a cold start puts them (a restart reuses them), the identity file is gone
    host = workspace_config_dir(p.settings, wid)
    assert engine.volumes.get(configs_volume(wid)).attrs["Options"]["device"] == str(host)
    assert (host / ".auth_token").read_text() and b"Warm Agent" in (host / "config.yaml").read_bytes()
    assert not (host / IDENTITY_FILE).exists()
    # /workspace written while warm is in the workspace volume a later cold start mounts (checked below)
    assert c.exec_run(["sh", "-c", "echo warm > /workspace/note"], user="0").exit_code == 0
    assert (
        engine.volumes.get(workspace_volume(wid)).attrs["Labels"][POOL_BACKING_LABEL].endswith("-workspace")
    )
    # the orphan sweep and the image refresh know whose it is, though its labels cannot say
    backend = DockerBackend(p.settings)
    try:
        assert wid in {i.workspace_id for i in await backend.list_instances()}
        assert wid in {u.workspace_id for u in await backend.image_users()}
        # an exec sees the workspace env, as in a cold container
        out = (await backend.exec(wid, ["env"])).stdout.decode()
        assert f"WORKSPACE_ID={wid}" in out.splitlines() and f"PLATFORM_URL={p.url}" in out.splitlines()
    finally:
        await backend.close()

    warm = await running_members(p, engine, 2)  # refilled
    a, b = await asyncio.gather(p.create("Twin A"), p.create("Twin B"))
    await asyncio.gather(p.wait_status(a, "online"), p.wait_status(b, "online"))
    ca, cb = workspace_container(engine, a), workspace_container(engine, b)
    assert ca.id != cb.id and {ca.id, cb.id} <= set(warm)
    assert await agent_reply((await p.get(b))["url"], "b") == "b"
    await running_members(p, engine, 2)

    r = await p.http.post(f"/workspaces/{wid}/restart")  # not fresh: the cold path, on its own volume
    assert r.status_code == 200, r.text
    await p.wait_for(lambda: _replaced(engine, wid, c.id), "the restarted container")
    view = await p.wait_status(wid, "online")
    assert POOL_LABEL not in workspace_container(engine, wid).labels
    assert await agent_reply(view["url"], "after restart") == "after restart"
    assert b"Warm Agent" in (host / "config.yaml").read_bytes()
    assert workspace_container(engine, wid).exec_run(["cat", "/workspace/note"]).output == b"warm\n"

    r = await p.http.delete(f"/workspaces/{wid}")
    assert r.status_code == 200
    assert not engine.containers.list(all=True, filters={"name": f"ws-{wid[:12]}"})
    assert not host.exists()


@pytest.fixture
def network(engine: Any) -> Iterator[str]:
    """A user-defined bridge network of this test's own (the server image's mode); removed after, with the
    unclaimed members still on it (request it before `platform_factory`: the server stops first)."""
    name = f"molecule-pool-test-{uuid.uuid4().hex[:8]}"
    yield name
    for net in engine.networks.list(names=[name]):
        net.reload()
        for cid in net.attrs.get("Containers") or {}:
            engine.api.remove_container(cid, force=True)
        net.remove()


PROBE = """
import json, socket, sys, urllib.request
url, text, old = sys.argv[1:4]
req = urllib.request.Request(url, data=text.encode(), headers={"Content-Type": "application/json"})
reply = json.load(urllib.request.urlopen(req, timeout=10))
try:
    socket.getaddrinfo(old, 8000)
    old_resolves = True
except OSError:
    old_resolves = False
print(json.dumps({"text": reply["result"]["parts"][0]["text"], "old_resolves": old_resolves}))
"""


def probe(engine: Any, network: str, url: str, text: str, old: str) -> dict[str, Any]:
    """A2A to `url` from a throwaway container on `network` (as a peer, or a server in a container, dials
    an agent by name), and whether `old` still resolves there."""
    out = engine.containers.run(
        "molecule/workspace-agent:latest",
        ["python3", "-c", PROBE, url, json.dumps(message_send(text)), old],
        entrypoint=[],
        network=network,
        remove=True,
        labels={"molecule.test": "pool-probe"},
    )
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def test_claim_on_a_bridge_network(
    network: str, platform_factory: PlatformFactory, engine: Any
) -> None:
    """Bridge mode (the server image's): a member is claimed by renaming it, and the agent must still be
    reachable where the server records it — the published loopback port, and its new name on the agents'
    network (what a server in a container and peers dial); its old member name no longer resolves."""
    bridge = {**POOL, "WARM_POOL_SIZE": 1, "DOCKER_NETWORK_MODE": "bridge", "DOCKER_NETWORK": network}
    p: Platform = await platform_factory("docker", bridged=True, **bridge)
    (warm,) = await running_members(p, engine, 1)
    old = engine.containers.get(warm).name

    wid = await p.create("Bridged Agent")
    view = await p.wait_status(wid, "online")
    c = workspace_container(engine, wid)
    assert c.id == warm and network in c.attrs["NetworkSettings"]["Networks"]
    assert c.attrs["HostConfig"]["NetworkMode"] == network
    assert view["url"].startswith("http://127.0.0.1:")
    assert await agent_reply(view["url"], "published") == "published"
    r = await p.a2a(wid, "via the platform")
    assert r.status_code == 200 and r.json()["result"]["parts"][0]["text"] == "via the platform"
    by_name = p.ctx.backend.network_url(wid, view["url"], 2)
    assert by_name == f"http://ws-{wid[:12]}:8000"
    got = await asyncio.to_thread(probe, engine, network, by_name, "by name", old)
    # an engine that is also a swarm node (the suite's swarm tests make this one one) keeps a renamed
    # container's old name in its DNS for a local network (measured: still there after 30 s); the new
    # name, the one the server hands out, resolves either way
    in_swarm = (engine.info().get("Swarm") or {}).get("LocalNodeState") == "active"
    assert got["text"] == "by name" and (in_swarm or got["old_resolves"] is False)
    await running_members(p, engine, 1)  # refilled on the same network


async def _replaced(engine: Any, wid: str, old_id: str) -> bool:
    found = await asyncio.to_thread(engine.api.containers, all=True, filters={"name": f"ws-{wid[:12]}"})
    return any(r["Id"] != old_id for r in found)


async def test_restart_adopts_then_disabled_pool_is_removed(
    platform_factory: PlatformFactory, engine: Any
) -> None:
    first: Platform = await platform_factory("docker", **POOL)
    warm = await running_members(first, engine, 2)
    await asyncio.to_thread(first.srv.stop)

    second: Platform = await platform_factory("docker", **POOL)  # same database, same engine
    await asyncio.sleep(1.0)  # a few refill passes
    assert sorted(await running_members(second, engine, 2)) == sorted(warm)  # adopted, none added
    await asyncio.to_thread(second.srv.stop)

    off: Platform = await platform_factory("docker", WARM_POOL_SIZE=0)
    await off.wait_for(lambda: _none_left(engine, off), "the disabled pool's members removed")
    wid = await off.create("Cold Agent")
    await off.wait_status(wid, "online")
    assert POOL_LABEL not in workspace_container(engine, wid).labels  # the cold path


async def _none_left(engine: Any, p: Platform) -> bool:
    return not await asyncio.to_thread(members, engine, p)


async def test_image_refresh_drains(platform_factory: PlatformFactory, engine: Any) -> None:
    p: Platform = await platform_factory("docker", **{**POOL, "WARM_POOL_SIZE": 1})
    (old,) = await running_members(p, engine, 1)

    async def pulled(ref: str, auth: Any) -> None:  # the engine has no registry here: the pull "succeeds"
        return None

    p.ctx.backend.pull_image = pulled
    r = await p.http.post("/admin/workspace-images/refresh?runtime=echo&recreate=false")
    assert r.status_code == 200 and r.json()["pulled"] == ["echo"], r.text
    assert not engine.containers.list(all=True, filters={"id": old})
    (new,) = await running_members(p, engine, 1)
    assert new != old


def read_configs(engine: Any, volume: str) -> str:
    """Owner, mode and name of each file in a configs volume, then config.yaml, from a throwaway container."""
    script = "cd /c && stat -c '%u %a %n' . * .[!.]* 2>/dev/null; cat config.yaml"
    out = engine.containers.run(
        "molecule/workspace-agent:latest",
        ["sh", "-c", script],
        entrypoint=[],
        network_mode="none",
        volumes={volume: {"bind": "/c", "mode": "ro"}},
        remove=True,
        labels={"molecule.test": "pool-probe"},
    )
    return str(out.decode())


async def test_engine_volumes_without_host_dirs(
    monkeypatch: pytest.MonkeyPatch, platform_factory: PlatformFactory, engine: Any
) -> None:
    """A server whose engine does not see its dirs (not root, or not a local engine: the non-root server
    image) still fills and claims the pool: identity by archive into the member's engine volume, and the
    workspace's configs volume is that volume's data, so a later cold restart and a delete use it."""
    monkeypatch.setattr(engine_module, "is_local_engine", lambda _settings: False)  # `_host_volumes` False
    p: Platform = await platform_factory("docker", **{**POOL, "WARM_POOL_SIZE": 1})
    assert p.ctx.backend._host_volumes is False
    (warm,) = await running_members(p, engine, 1)
    member = engine.containers.get(warm)
    backing = f"{member.name}-configs"
    assert member.labels[POOL_MOUNT_LABEL] == engine.volumes.get(backing).attrs["Mountpoint"]
    assert not (p.settings.DATA_DIR / "warm-pool" / member.name).exists()  # no host dir

    wid = await p.create("Engine Agent")
    view = await p.wait_status(wid, "online")
    assert workspace_container(engine, wid).id == warm
    r = await p.a2a(wid, "engine volume")
    assert r.status_code == 200 and r.json()["result"]["parts"][0]["text"] == "engine volume"
    assert not workspace_config_dir(p.settings, wid).exists()
    assert engine.volumes.get(configs_volume(wid)).attrs["Labels"][POOL_BACKING_LABEL] == backing
    seen = await asyncio.to_thread(read_configs, engine, configs_volume(wid))
    assert "1000 755 .\n" in seen and "1000 600 .auth_token\n" in seen and "Engine Agent" in seen
    assert IDENTITY_FILE not in seen  # the waiter took it
    claimed = workspace_container(engine, wid)
    assert claimed.exec_run(["sh", "-c", "echo warm > /workspace/note"], user="0").exit_code == 0
    await running_members(p, engine, 1)  # refilled in the same mode

    r = await p.http.post(f"/workspaces/{wid}/restart")  # cold, on the workspace's volume: the same data
    assert r.status_code == 200, r.text
    await p.wait_for(lambda: _replaced(engine, wid, warm), "the restarted container")
    view = await p.wait_status(wid, "online")
    assert POOL_LABEL not in workspace_container(engine, wid).labels
    assert await agent_reply(view["url"], "after restart") == "after restart"
    assert "Engine Agent" in await asyncio.to_thread(read_configs, engine, configs_volume(wid))
    assert workspace_container(engine, wid).exec_run(["cat", "/workspace/note"]).output == b"warm\n"
    await asyncio.to_thread(p.ctx.backend._remove_dangling_volumes)  # not the workspace's data
    assert engine.volumes.get(backing) and engine.volumes.get(f"{member.name}-workspace")

    r = await p.http.delete(f"/workspaces/{wid}?purge=true")
    assert r.status_code == 200, r.text
    names = {v.name for v in engine.volumes.list()}
    gone = {configs_volume(wid), backing, workspace_volume(wid), f"{member.name}-workspace"}
    assert not gone & names
