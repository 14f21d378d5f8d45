"""What only the Swarm backend does, on a single-node swarm: the overlay network with a host-mode
published port, the pin to the node holding the volumes, tier constraints, privileged tiers refused, and
adoption of a running service. The protocol itself is checked by the parametrised Docker suites."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.provisioner_support import (
    AGENT_IMAGE,
    WorkspaceIds,
    echo_spec,
    echoed_text,
    ids_fixture,  # noqa: F401 - registers the ids fixture
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
    wait_for_reply,
)
from workspace_server.config import Settings
from workspace_server.provisioner import BackendError, InstanceNotRunning, make_backend
from workspace_server.provisioner.swarm import SwarmBackend
from workspace_server.provisioner.swarm.spec import VOLUME_NODE_LABEL

pytestmark = pytest.mark.docker

CONFIG_YAML = b"name: Swarm Echo\n"


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(**{"DATA_DIR": str(tmp_path / "data"), "DOCKER_NETWORK_MODE": "host", **overrides})


@pytest.fixture
async def backend(swarm_manager: Any, tmp_path: Path) -> AsyncIterator[SwarmBackend]:
    b = SwarmBackend(settings(tmp_path))
    yield b
    await b.close()


async def test_factory_picks_swarm_on_a_manager(swarm_manager: Any, tmp_path: Path) -> None:
    chosen = await make_backend(Settings(WORKSPACE_BACKEND="swarm", DATA_DIR=tmp_path))
    assert isinstance(chosen, SwarmBackend) and chosen.name == "swarm"
    await chosen.close()


async def test_overlay_network_with_published_port(
    swarm_manager: Any, ids: WorkspaceIds, tmp_path: Path
) -> None:
    network = f"molecule-test-{uuid.uuid4().hex[:8]}"
    b = SwarmBackend(
        settings(tmp_path, DOCKER_NETWORK_MODE="bridge", SWARM_NETWORK=network, MOLECULE_IN_DOCKER=False)
    )
    ws_id = ids.new()
    try:
        started = await b.start(echo_spec(ws_id, CONFIG_YAML, image=AGENT_IMAGE))
        port = int(started.url.rsplit(":", 1)[1])
        assert started.url == f"http://127.0.0.1:{port}"
        assert echoed_text(await wait_for_reply(started.url, "over the overlay")) == "over the overlay"

        service = swarm_manager.services.get(started.instance_id)
        spec = service.attrs["Spec"]
        assert spec["EndpointSpec"]["Ports"] == [
            {"Protocol": "tcp", "TargetPort": 8000, "PublishedPort": port, "PublishMode": "host"}
        ]
        net = swarm_manager.networks.get(network)
        assert net.attrs["Driver"] == "overlay" and net.attrs["Attachable"] is True
        assert spec["TaskTemplate"]["Networks"] == [{"Target": net.id}]
        # pinned to this node, the one holding the volumes, by its label
        node = swarm_manager.nodes.get(swarm_manager.info()["Swarm"]["NodeID"])
        label = node.attrs["Spec"]["Labels"][VOLUME_NODE_LABEL]
        constraints = spec["TaskTemplate"]["Placement"]["Constraints"]
        assert f"node.labels.{VOLUME_NODE_LABEL}=={label}" in constraints
        # the image by the id the pull policy resolved: the task's preparation pulls nothing
        assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == swarm_manager.images.get(AGENT_IMAGE).id
        assert spec["Labels"]["molecule.image"] == AGENT_IMAGE
        # addresses: peers (and a server inside the swarm) use the service name on the overlay
        assert b.shares_host_network(2) is False
        assert b.network_url(ws_id, started.url, 2) == f"http://ws-{ws_id[:12]}:8000"
        assert b.dial_url(ws_id, started.url) == started.url  # this server runs outside the swarm
        b.settings.MOLECULE_IN_DOCKER = True  # as a service on the overlay, it dials the service name
        assert b.dial_url(ws_id, started.url) == f"http://ws-{ws_id[:12]}:8000"
        env = (await b.exec(ws_id, ["env"])).stdout.decode()
        assert "A2A_PORT=8000\n" in env and f"MOLECULE_AGENT_URL=http://localhost:{port}\n" in env

        assert await b.instance_url(ws_id) == started.url  # adoption reads the port back
        await b.stop(ws_id)
        assert await b.instance_url(ws_id) is None and await b.is_running(ws_id) is False
        assert swarm_manager.secrets.list(filters={"label": f"molecule.workspace.id={ws_id}"}) == []
    finally:
        await b.stop(ws_id)
        await b.remove_volumes(ws_id, workspace=True)
        await b.close()
        for n in swarm_manager.networks.list(names=[network]):
            n.remove()


async def test_tier_constraints_and_privileged_tiers(
    swarm_manager: Any, ids: WorkspaceIds, tmp_path: Path
) -> None:
    b = SwarmBackend(
        settings(
            tmp_path,
            SWARM_TIER_CONSTRAINTS="3=node.labels.molecule-test-none==yes",
            ALLOW_PRIVILEGED_TIERS="true",
        )
    )
    try:
        ws_id = ids.new()
        with pytest.raises(BackendError) as err:  # no node carries the label: refused, not left pending
            await b.start(echo_spec(ws_id, CONFIG_YAML, image=AGENT_IMAGE, tier=3))
        assert err.value.message in (
            "no swarm node may run the workspace",
            "tier 3 needs a privileged container, which Swarm cannot run",
        )
        assert await b.is_running(ws_id) is False
        b.settings.ALLOW_PRIVILEGED_TIERS = False
        with pytest.raises(BackendError) as err:
            await b.start(echo_spec(ws_id, CONFIG_YAML, image=AGENT_IMAGE, tier=3))
        assert err.value.message == "no swarm node may run the workspace"
        assert swarm_manager.services.list(filters={"name": f"ws-{ws_id[:12]}"}) == []
        assert swarm_manager.secrets.list(filters={"label": f"molecule.workspace.id={ws_id}"}) == []
        b.settings.ALLOW_PRIVILEGED_TIERS = True
        with pytest.raises(BackendError) as err:
            await b.start(echo_spec(ws_id, CONFIG_YAML, image=AGENT_IMAGE, tier=4))
        assert err.value.message == "tier 4 needs a privileged container, which Swarm cannot run"
    finally:
        await b.close()


async def test_killed_task_is_not_restarted_by_swarm(
    backend: SwarmBackend, ids: WorkspaceIds, swarm_manager: Any
) -> None:
    ws_id = ids.new()
    await backend.start(echo_spec(ws_id, CONFIG_YAML, image=AGENT_IMAGE))
    containers = swarm_manager.containers.list(
        filters={"label": f"com.docker.swarm.service.name=ws-{ws_id[:12]}"}
    )
    containers[0].kill()
    for _ in range(100):
        if not await backend.is_running(ws_id):
            break
        await asyncio.sleep(0.1)
    assert await backend.is_running(ws_id) is False  # the health sweep restarts it, not Swarm
    tasks = swarm_manager.services.get(f"ws-{ws_id[:12]}").tasks()
    assert len(tasks) == 1


async def test_chat_files_live_in_the_task_container(backend: SwarmBackend, ids: WorkspaceIds) -> None:
    ws_id = ids.new()
    with pytest.raises(InstanceNotRunning):
        await backend.chat_files(ws_id, "", "none")
    await backend.start(echo_spec(ws_id, CONFIG_YAML, image=AGENT_IMAGE))
    fs = await backend.chat_files(ws_id, "", "none")
    payload = bytes(range(256)) * 40  # (under /tmp: a fresh /workspace volume is root-owned, as on Docker)
    await fs.write_flat("/tmp/chat-uploads", {"a.bin": payload})
    stream = await fs.open_file("/tmp/chat-uploads/a.bin")
    assert stream.size == len(payload)
    assert b"".join([chunk async for chunk in stream.chunks]) == payload
    res = await backend.exec(ws_id, ["cat", "/tmp/chat-uploads/a.bin"])
    assert res.stdout == payload
