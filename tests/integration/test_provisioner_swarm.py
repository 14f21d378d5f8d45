"""What only the Swarm backend does, on a single-node swarm: the overlay network with a host-mode
published port, the pin to the node holding the volumes, tier constraints, privileged tiers refused,
adoption of a running service, and secrets as Swarm secrets (a workspace's secret values never in the
service spec). The protocol itself is checked by the parametrised Docker suites."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.integration.orchestrator_support import (
    Platform,
    PlatformFactory,
    agent_reply,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from tests.integration.provisioner_support import (
    AGENT_IMAGE,
    WorkspaceIds,
    echo_spec,
    echoed_text,
    ids_fixture,  # noqa: F401 - registers the ids fixture
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
    task_container,
    wait_for_reply,
)
from tests.integration.stub_http import ModelStub
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


def ws_secrets(swarm_manager: Any, wid: str) -> list[Any]:
    return list(swarm_manager.secrets.list(filters={"label": f"molecule.workspace.id={wid}"}))


async def test_secret_values_are_swarm_secrets_not_service_env(
    swarm_manager: Any, platform_factory: PlatformFactory, model_stub: ModelStub
) -> None:
    """Set through the API as a workspace secret: the service spec names a file, the value is a Swarm
    secret, the agent reads it (its model stub receives the key), a new start rolls the secrets and a
    delete removes them."""
    p: Platform = await platform_factory("swarm")
    key = f"sk-swarm-{uuid.uuid4().hex}"
    wid = await p.create("Secret Agent", secrets={"OPENAI_BASE_URL": model_stub.url, "OPENAI_API_KEY": key})
    view = await p.wait_status(wid, "online")
    name = f"ws-{wid[:12]}"

    spec = swarm_manager.services.get(name).attrs["Spec"]
    assert key not in json.dumps(spec)  # what `docker service inspect` shows
    env = spec["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "OPENAI_API_KEY_FILE=/run/secrets/OPENAI_API_KEY" in env
    assert not any(e.startswith("OPENAI_API_KEY=") for e in env)
    held = {s.attrs["Spec"]["Labels"].get("molecule.secret.env"): s for s in ws_secrets(swarm_manager, wid)}
    assert set(held) == {"OPENAI_API_KEY", "OPENAI_BASE_URL", None}  # and the token's
    assert held["OPENAI_API_KEY"].name.startswith(f"{name}-env-OPENAI_API_KEY-")
    refs = {r["SecretName"]: r["File"]["Name"] for r in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]}
    assert refs[held["OPENAI_API_KEY"].name] == "OPENAI_API_KEY"  # /run/secrets/OPENAI_API_KEY

    assert await agent_reply(view["url"], "hi") == "noted"  # the agent read both from their files
    assert model_stub.auth == [f"Bearer {key}"]
    container = task_container(swarm_manager, wid)
    assert key not in json.dumps(container.attrs["Config"]["Env"])
    listing = container.exec_run(["ls", "-ln", "/run/secrets"]).output.decode()
    assert "-r-------- 1 1000 1000" in listing  # the image user's, readable by it alone

    # a restart with a new value: new secrets, the old ones gone
    old = {s.id for s in ws_secrets(swarm_manager, wid)}
    newer = key + "-rotated"
    r = await p.http.post(f"/workspaces/{wid}/secrets", json={"key": "OPENAI_API_KEY", "value": newer})
    assert r.status_code < 300, r.text

    async def rolled() -> bool:
        now = {s.id for s in ws_secrets(swarm_manager, wid)}
        return bool(now) and not now & old and (await p.get(wid))["status"] == "online"

    await p.wait_for(rolled, "the secrets of the restarted service")
    view = await p.wait_status(wid, "online")
    assert await agent_reply(view["url"], "again") == "noted"
    assert model_stub.auth[-1] == f"Bearer {newer}"

    r = await p.http.delete(f"/workspaces/{wid}?confirm=true")
    assert r.status_code < 300, r.text
    assert swarm_manager.services.list(filters={"name": name}) == []
    assert ws_secrets(swarm_manager, wid) == []


async def test_secrets_left_without_a_service_are_listed_for_the_orphan_sweep(
    backend: SwarmBackend, ids: WorkspaceIds, swarm_manager: Any
) -> None:
    """A start cut short between its secrets and its service: the workspace is listed (not running), so
    the orphan sweep's stop removes them, as it removes a service's."""
    ws_id = ids.new()
    labels = {"molecule.platform.managed": "true", "molecule.workspace.id": ws_id}
    secret = swarm_manager.secrets.create(name=f"ws-{ws_id[:12]}-env-K-test", data=b"v", labels=labels)
    try:
        listed = [i for i in await backend.list_instances() if i.workspace_id == ws_id]
        assert [(i.name, i.running) for i in listed] == [(f"ws-{ws_id[:12]}", False)]
        await backend.stop(ws_id)
        assert ws_secrets(swarm_manager, ws_id) == []
        assert [i for i in await backend.list_instances() if i.workspace_id == ws_id] == []
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            secret.remove()


async def test_secret_files_on_a_read_only_rootfs(backend: SwarmBackend, ids: WorkspaceIds) -> None:
    """T1 (read-only rootfs, no capabilities): the secret is still mounted and readable by the agent user;
    a key not marked secret stays plain env."""
    ws_id = ids.new()
    env = {"T1_KEY": "t1-value", "PLAIN_KEY": "plain"}
    spec = echo_spec(
        ws_id, CONFIG_YAML, image=AGENT_IMAGE, tier=1, env=env, secret_keys=frozenset({"T1_KEY"})
    )
    await backend.start(spec)
    assert (await backend.exec(ws_id, ["cat", "/run/secrets/T1_KEY"])).stdout == b"t1-value"
    shown = (await backend.exec(ws_id, ["env"])).stdout.decode().splitlines()
    assert "T1_KEY_FILE=/run/secrets/T1_KEY" in shown and "PLAIN_KEY=plain" in shown
    assert not any(line.startswith("T1_KEY=") for line in shown)
