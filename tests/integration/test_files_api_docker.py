"""The files API against real containers of the reference agent image (host network), on the docker backend
and on the Swarm backend (the same files modules, reaching the service's task container)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.integration.files_api_support import (
    add_workspace,
    check_running_contract,
    ctx_of,
    files_url,
    install_backend,
    start_echo_agent,
)
from tests.integration.provisioner_support import (
    AGENT_IMAGE,
    BACKENDS,
    cleanup,
    docker_client,
    need_agent_image,
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
)
from workspace_server.provisioner.docker import DockerBackend, configs_volume
from workspace_server.provisioner.swarm import SwarmBackend

pytestmark = pytest.mark.docker


@pytest.fixture
def engine() -> Any:
    c = docker_client()
    need_agent_image(c)
    yield c
    c.close()


@pytest.fixture(params=BACKENDS)
async def env(
    engine: Any, client_factory: ClientFactory, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, DockerBackend]]:
    if request.param == "swarm":
        request.getfixturevalue("swarm_manager")
    client = await client_factory(MOLECULE_ENV="development", DOCKER_NETWORK_MODE="host")
    kind = SwarmBackend if request.param == "swarm" else DockerBackend
    backend = kind(ctx_of(client).settings)
    started = install_backend(client, backend)
    yield client, backend
    await cleanup(backend, started)
    await backend.close()


async def test_running_container_contract(env: tuple[httpx.AsyncClient, DockerBackend]) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, AGENT_IMAGE)
    await check_running_contract(client, ws_id)
    # the file is really in the container, owned by the agent user (it can edit its own config)
    res = await backend.exec(ws_id, ["stat", "-c", "%u %a", "/configs/b.md"])
    assert res.stdout.decode().split() == ["1000", "644"]


async def test_container_listing_skips_vcs_and_caches(env: tuple[httpx.AsyncClient, DockerBackend]) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, AGENT_IMAGE)
    # (the agent user owns /configs; /workspace is the engine's root-owned volume)
    script = "cd /configs && mkdir -p .git/objects node_modules/x __pycache__ src && touch .DS_Store"
    assert (await backend.exec(ws_id, ["sh", "-c", script])).exit_code == 0
    assert (
        await backend.exec(ws_id, ["sh", "-c", "printf 12345 > '/configs/src/we ird|name.py'"])
    ).exit_code == 0

    listing = (await client.get(files_url(ws_id), params={"depth": "3"})).json()

    assert [e["path"] for e in listing] == [".auth_token", "config.yaml", "src", "src/we ird|name.py"]
    assert listing[3] == {"path": "src/we ird|name.py", "size": 5, "dir": False}
    resp = await client.get(files_url(ws_id, "src/we%20ird%7Cname.py"))
    assert resp.json() == {"content": "12345", "path": "src/we ird|name.py", "size": 5}
    listing = (await client.get(files_url(ws_id), params={"root": "/workspace"})).json()
    assert listing == []  # the empty workspace volume of a running container


async def test_special_files_are_not_read(env: tuple[httpx.AsyncClient, DockerBackend]) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, AGENT_IMAGE)
    script = "ln -s /dev/zero /configs/zero && mkfifo /configs/fifo"
    assert (await backend.exec(ws_id, ["sh", "-c", script])).exit_code == 0
    for name in ("zero", "fifo"):
        resp = await client.get(files_url(ws_id, name))
        assert (resp.status_code, resp.json()) == (404, {"error": "file not found"}), name


async def test_stopped_workspace_goes_through_its_config_volume(
    env: tuple[httpx.AsyncClient, DockerBackend], engine: Any
) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, AGENT_IMAGE)
    await client.put(files_url(ws_id, "keep.md"), json={"content": "survives the stop"})
    await backend.stop(ws_id)  # removes the container; the config volume stays

    assert (await client.get(files_url(ws_id, "keep.md"))).json()["content"] == "survives the stop"
    names = [e["path"] for e in (await client.get(files_url(ws_id))).json()]
    assert "keep.md" in names and "config.yaml" in names
    resp = await client.put(files_url(ws_id), json={"files": {"offline/new.md": "written offline"}})
    assert resp.json()["source"] == "volume"
    resp = await client.put(files_url(ws_id, "single.md"), json={"content": "one"})
    assert resp.json() == {"path": "single.md", "status": "saved"}
    assert (await client.delete(files_url(ws_id, "keep.md"))).status_code == 200
    assert (await client.get(files_url(ws_id, "keep.md"))).status_code == 404
    assert (await client.get(files_url(ws_id), params={"root": "/workspace"})).json() == []

    # the next start sees the offline edits, and no helper container was left behind
    await start_echo_agent(backend, ws_id, AGENT_IMAGE)
    res = await backend.exec(ws_id, ["cat", "/configs/offline/new.md", "/configs/single.md"])
    assert res.stdout == b"written offlineone"
    leftovers = engine.containers.list(all=True, filters={"name": f"ws-{ws_id[:12]}-seed"})
    assert leftovers == []
    assert engine.volumes.get(configs_volume(ws_id)).name == configs_volume(ws_id)


async def test_unprovisioned_docker_workspace_has_no_volume(
    env: tuple[httpx.AsyncClient, DockerBackend], engine: Any
) -> None:
    client, _backend = env
    ws_id = await add_workspace(client, name="Never Started")
    resp = await client.get(files_url(ws_id, "config.yaml"))
    assert resp.json() == {"error": "file not found (container offline, no template)"}
    resp = await client.put(files_url(ws_id, "a.md"), json={"content": "x"})
    assert resp.status_code == 500 and resp.json()["error"].startswith("failed to write file: ")
    assert (await client.delete(files_url(ws_id, "a.md"))).status_code == 200
    names = [v.name for v in engine.volumes.list()]
    assert configs_volume(ws_id) not in names  # no stray volume was created
