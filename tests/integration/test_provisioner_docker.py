"""The docker backend on a real engine, running the reference agent image (host-network mode mostly).

The tests that exercise the Backend protocol run on the Swarm backend as well (`backend` is
parametrised over BACKENDS, the Swarm leg on a single-node swarm); the ones about containers the Docker
backend creates itself (tiers, bridge mode, host-dir volumes) stay Docker-only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.provisioner_support import (
    AGENT_IMAGE,
    BACKENDS,
    WorkspaceIds,
    check_not_running_refused,
    check_tty_and_session,
    cleanup,
    docker_client,
    echo_spec,
    echoed_text,
    ids_fixture,  # noqa: F401 - registers the ids fixture
    need_agent_image,
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
    task_container,
    wait_for_reply,
    wait_until,
)
from workspace_server.config import Settings
from workspace_server.provisioner import BackendError, StartSpec
from workspace_server.provisioner.docker import (
    DockerBackend,
    configs_volume,
    sessions_volume,
    workspace_volume,
)
from workspace_server.provisioner.docker import volumes as docker_backend
from workspace_server.provisioner.swarm import SwarmBackend
from workspace_server.workspaces.files import workspace_config_dir

pytestmark = pytest.mark.docker

CONFIG_YAML = b"name: Docker Echo\ndescription: test agent\nskills: [echo]\n"


@pytest.fixture
def client() -> Any:
    c = docker_client()
    need_agent_image(c)
    yield c
    c.close()


def make_backend(tmp_path: Path, kind: str = "docker", **overrides: Any) -> DockerBackend:
    base: dict[str, Any] = {"DATA_DIR": str(tmp_path / "data"), "DOCKER_NETWORK_MODE": "host"}
    base.update(overrides)
    return SwarmBackend(Settings(**base)) if kind == "swarm" else DockerBackend(Settings(**base))


# the tests about what the Docker backend does itself (its container's host config, bridge networks,
# host-dir config volumes) run on it alone
docker_only = pytest.mark.parametrize("kind", ["docker"], indirect=True)


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "swarm":
        request.getfixturevalue("swarm_manager")
    return str(request.param)


@pytest.fixture
async def backend(client: Any, tmp_path: Path, kind: str) -> AsyncIterator[DockerBackend]:
    b = make_backend(tmp_path, kind)
    yield b
    await b.close()


def spec_for(ws_id: str, **kw: Any) -> StartSpec:
    return echo_spec(ws_id, CONFIG_YAML, **{"image": AGENT_IMAGE, "tier": 2, **kw})


async def sh(backend: DockerBackend, ws_id: str, script: str) -> str:
    res = await backend.exec(ws_id, ["sh", "-c", script])
    assert res.exit_code == 0, res
    return res.stdout.decode()


async def test_start_serves_a2a_with_config_files_and_env(
    backend: DockerBackend, ids: WorkspaceIds, client: Any
) -> None:
    ws_id = ids.new()
    token = b"tok-" + uuid.uuid4().hex.encode()
    spec = spec_for(
        ws_id,
        env={"CUSTOM_VAR": "v1", "PLUGINS_DIR": "/custom"},
        config_files={"config.yaml": CONFIG_YAML, ".auth_token": token},
    )
    started = await backend.start(spec)
    port = int(started.url.rsplit(":", 1)[1])
    assert started.url == f"http://127.0.0.1:{port}"

    reply = await wait_for_reply(started.url, "hello docker")
    assert echoed_text(reply) == "hello docker"
    async with httpx.AsyncClient() as http:
        card = (await http.get(started.url + "/.well-known/agent-card.json")).json()
    assert card["name"] == "Docker Echo"  # config.yaml reached /configs and was read
    assert card["url"] == f"http://localhost:{port}"  # the advertised URL passes the register check

    listing = await sh(
        backend, ws_id, "stat -c '%a %u %n' /configs /configs/.auth_token /configs/config.yaml"
    )
    assert listing.split("\n")[:3] == [
        "755 1000 /configs",
        "600 1000 /configs/.auth_token",
        "644 1000 /configs/config.yaml",
    ]
    assert (await sh(backend, ws_id, "cat /configs/.auth_token")).encode() == token
    assert (await sh(backend, ws_id, "id -u")).strip() == "1000"

    env = dict(line.split("=", 1) for line in (await sh(backend, ws_id, "env")).splitlines() if "=" in line)
    assert env["WORKSPACE_ID"] == ws_id
    assert env["WORKSPACE_CONFIG_PATH"] == "/configs"
    assert env["PLATFORM_URL"] == env["MOLECULE_URL"] == "http://127.0.0.1:9"
    assert env["TIER"] == "2" and env["PYTHONPATH"] == "/app"
    assert env["CUSTOM_VAR"] == "v1" and env["PLUGINS_DIR"] == "/custom"
    assert env["A2A_PORT"] == str(port) and env["MOLECULE_AGENT_URL"] == f"http://localhost:{port}"

    container = task_container(client, ws_id)
    if isinstance(backend, SwarmBackend):  # the service carries the labels; the health sweep restarts
        service = client.services.get(started.instance_id)
        assert service.name == f"ws-{ws_id[:12]}"
        labels = service.attrs["Spec"]["Labels"]
        template = service.attrs["Spec"]["TaskTemplate"]
        assert template["RestartPolicy"]["Condition"] == "none"
        assert [s["File"]["Name"] for s in template["ContainerSpec"]["Secrets"]] == ["/configs/.auth_token"]
    else:
        assert container.id == started.instance_id
        labels = container.labels
        assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert labels["molecule.platform.managed"] == "true"
    assert labels["molecule.workspace.id"] == ws_id
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/configs"]["Name"] == configs_volume(ws_id)
    assert mounts["/workspace"]["Name"] == workspace_volume(ws_id)
    assert client.volumes.get(configs_volume(ws_id)).attrs["Labels"]["molecule.platform.managed"] == "true"
    assert "A2A listening" in await backend.logs(ws_id, tail=50)


async def test_killed_container_is_not_running_and_stop_is_idempotent(
    backend: DockerBackend, ids: WorkspaceIds, client: Any
) -> None:
    ws_id = ids.new()
    await backend.start(spec_for(ws_id))
    assert await backend.is_running(ws_id) is True

    task_container(client, ws_id).kill()

    async def stopped() -> bool:
        return not await backend.is_running(ws_id)

    await wait_until(stopped, "the killed container to read as not running")
    await backend.stop(ws_id)
    await backend.stop(ws_id)  # already gone: still fine
    unknown = str(uuid.uuid4())
    await backend.stop(unknown)
    assert await backend.is_running(unknown) is False
    assert [c.name for c in client.containers.list(all=True, filters={"name": f"ws-{ws_id[:12]}"})] == []


async def test_remove_volumes_leaves_no_config_volume(
    backend: DockerBackend, ids: WorkspaceIds, client: Any
) -> None:
    ws_id = ids.new()
    await backend.start(spec_for(ws_id, runtime="claude-code"))
    names = {v.name for v in client.volumes.list(filters={"label": f"molecule.workspace.id={ws_id}"})}
    assert names == {configs_volume(ws_id), sessions_volume(ws_id)}
    await backend.stop(ws_id)
    await backend.remove_volumes(ws_id)
    left = {v.name for v in client.volumes.list()}
    assert configs_volume(ws_id) not in left and sessions_volume(ws_id) not in left
    assert workspace_volume(ws_id) in left  # user data is kept unless asked for
    await backend.remove_volumes(ws_id, workspace=True)
    await backend.remove_volumes(ws_id, workspace=True)  # idempotent
    assert workspace_volume(ws_id) not in {v.name for v in client.volumes.list()}


async def test_restart_reuses_the_config_volume(backend: DockerBackend, ids: WorkspaceIds) -> None:
    ws_id = ids.new()
    await backend.start(spec_for(ws_id))
    started = await backend.start(spec_for(ws_id, config_files={".auth_token": b"rotated"}))
    await wait_for_reply(started.url)
    assert await sh(backend, ws_id, "cat /configs/.auth_token") == "rotated"
    assert "Docker Echo" in await sh(backend, ws_id, "cat /configs/config.yaml")  # not wiped by a restart


@docker_only
async def test_tier_limits_in_host_config(tmp_path: Path, ids: WorkspaceIds, client: Any) -> None:
    backend = make_backend(tmp_path, TIER2_MEMORY_MB="300", TIER2_CPU_SHARES="512")
    try:
        t2, t3 = ids.new(), ids.new()
        await backend.start(spec_for(t2, tier=2))
        await backend.start(spec_for(t3, tier=3))
        h2 = client.containers.get(f"ws-{t2[:12]}").attrs["HostConfig"]
        assert h2["Memory"] == 300 * 1024 * 1024 and h2["NanoCpus"] == 512 * 10**9 // 1024
        h3 = client.containers.get(f"ws-{t3[:12]}").attrs["HostConfig"]
        assert h3["Memory"] == 2048 * 1024 * 1024 and h3["NanoCpus"] == 2 * 10**9
        assert h3["Privileged"] is False and h3["PidMode"] == ""  # no opt-in: no host access
    finally:
        await cleanup(backend, ids.ids)
        await backend.close()


async def test_tier1_read_only_rootfs_still_serves_and_owns_configs(
    backend: DockerBackend, ids: WorkspaceIds, client: Any
) -> None:
    ws_id = ids.new()
    started = await backend.start(spec_for(ws_id, tier=1))
    await wait_for_reply(started.url)
    attrs = task_container(client, ws_id).attrs
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert host["Memory"] == 256 * 1024 * 1024
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    if isinstance(backend, SwarmBackend):  # a service takes tmpfs as a mount
        assert mounts.keys() == {"/configs", "/tmp"}
        assert mounts["/tmp"]["Type"] == "tmpfs"
    else:
        assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=64m"}
        assert mounts.keys() == {"/configs"}  # workspace volume dropped
    # the agent user owns /configs although the rootfs is read-only
    assert await sh(backend, ws_id, "touch /configs/x && stat -c '%u' /configs") == "1000\n"
    assert (await backend.exec(ws_id, ["touch", "/app/x"])).exit_code != 0
    seeds = client.containers.list(all=True, filters={"name": f"ws-{ws_id[:12]}-seed"})
    assert seeds == []  # the helper that seeded the volume is gone


@docker_only
async def test_tier4_privileges_only_with_opt_in(tmp_path: Path, ids: WorkspaceIds, client: Any) -> None:
    backend = make_backend(tmp_path, DOCKER_NETWORK_MODE="bridge", ALLOW_PRIVILEGED_TIERS="true")
    try:
        ws_id = ids.new()
        started = await backend.start(spec_for(ws_id, tier=4))
        await wait_for_reply(started.url)  # host network with its own port, though the backend is bridge
        attrs = client.containers.get(f"ws-{ws_id[:12]}").attrs
        host = attrs["HostConfig"]
        assert host["Privileged"] is True and host["PidMode"] == "host" and host["NetworkMode"] == "host"
        assert "/var/run/docker.sock:/var/run/docker.sock:rw" in host["Binds"]
    finally:
        await cleanup(backend, ids.ids)
        await backend.close()


@docker_only
async def test_bridge_mode_publishes_on_loopback(tmp_path: Path, ids: WorkspaceIds, client: Any) -> None:
    network = f"molecule-test-{uuid.uuid4().hex[:8]}"
    backend = make_backend(tmp_path, DOCKER_NETWORK_MODE="bridge", DOCKER_NETWORK=network)
    try:
        ws_id = ids.new()
        started = await backend.start(spec_for(ws_id))
        port = started.url.rsplit(":", 1)[1]
        assert echoed_text(await wait_for_reply(started.url, "over the bridge")) == "over the bridge"
        attrs = client.containers.get(f"ws-{ws_id[:12]}").attrs
        assert attrs["HostConfig"]["PortBindings"]["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": port}]
        assert network in attrs["NetworkSettings"]["Networks"]
        assert "host.docker.internal:host-gateway" in attrs["HostConfig"]["ExtraHosts"]
        env = await sh(backend, ws_id, "env")
        assert "A2A_PORT=8000\n" in env and f"MOLECULE_AGENT_URL=http://localhost:{port}\n" in env
    finally:
        await cleanup(backend, ids.ids)
        await backend.close()
        for net in client.networks.list(names=[network]):
            net.remove()


async def test_exec_session_and_files_on_a_running_container(
    backend: DockerBackend, ids: WorkspaceIds
) -> None:
    ws_id = ids.new()
    await backend.start(spec_for(ws_id))

    res = await backend.exec(ws_id, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.exit_code, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    await check_tty_and_session(backend, ws_id)

    await backend.write_config_files(ws_id, {"skills/new/SKILL.md": b"# new\n"})
    assert await sh(
        backend, ws_id, "stat -c '%u %a' /configs/skills/new/SKILL.md; cat /configs/skills/new/SKILL.md"
    ) == ("1000 644\n# new\n")
    with pytest.raises(BackendError):
        await backend.write_config_files(ws_id, {"../escape": b"x"})

    instances = {i.workspace_id: i for i in await backend.list_instances()}
    assert instances[ws_id].running is True and instances[ws_id].name == f"ws-{ws_id[:12]}"

    await check_not_running_refused(backend)


async def test_unsafe_workspace_bind_is_refused_before_anything_runs(
    backend: DockerBackend, ids: WorkspaceIds, client: Any
) -> None:
    ws_id = ids.new()
    with pytest.raises(BackendError):
        await backend.start(spec_for(ws_id, workspace_path="/etc", workspace_access="read_write"))
    assert client.containers.list(all=True, filters={"name": f"ws-{ws_id[:12]}"}) == []


async def test_workspace_bind_read_only(backend: DockerBackend, ids: WorkspaceIds, tmp_path: Path) -> None:
    host_dir = tmp_path / "project"
    host_dir.mkdir()
    (host_dir / "README").write_text("mine")
    ws_id = ids.new()
    await backend.start(spec_for(ws_id, workspace_path=str(host_dir), workspace_access="read_only"))
    assert await sh(backend, ws_id, "cat /workspace/README") == "mine"
    assert (await backend.exec(ws_id, ["sh", "-c", "echo x > /workspace/new"])).exit_code != 0


async def test_auto_picks_docker_when_the_engine_answers(client: Any, tmp_path: Path) -> None:
    from workspace_server.provisioner import make_backend as choose

    backend = await choose(Settings(WORKSPACE_BACKEND="auto", DATA_DIR=tmp_path))
    assert isinstance(backend, DockerBackend) and backend.name == "docker"
    await backend.close()


async def test_empty_image_is_refused(backend: DockerBackend, ids: WorkspaceIds) -> None:
    with pytest.raises(BackendError) as err:
        await backend.start(spec_for(ids.new(), image=""))
    assert err.value.message == "no image for the workspace runtime"


# ---- host-dir configs volume (local engine): files written on the host, no put_archive ----


def volume_device(client: Any, ws_id: str) -> str:
    return str((client.volumes.get(configs_volume(ws_id)).attrs.get("Options") or {}).get("device") or "")


@docker_only
async def test_local_engine_configs_volume_is_backed_by_the_workspace_config_dir(
    backend: DockerBackend, ids: WorkspaceIds, client: Any
) -> None:
    ws_id = ids.new()
    token = b"tok-" + uuid.uuid4().hex.encode()
    spec = spec_for(
        ws_id, config_files={"config.yaml": CONFIG_YAML, ".auth_token": token, "skills/a/SKILL.md": b"a"}
    )
    started = await backend.start(spec)
    await wait_for_reply(started.url)
    host = workspace_config_dir(backend.settings, ws_id)
    assert volume_device(client, ws_id) == str(host)
    vol = client.volumes.get(configs_volume(ws_id)).attrs
    assert vol["Labels"] == {"molecule.platform.managed": "true", "molecule.workspace.id": ws_id}
    # written on the host as the image user; the agent sees the same files
    st = {
        rel: (host / rel).stat() for rel in (".", ".auth_token", "config.yaml", "skills", "skills/a/SKILL.md")
    }
    assert {rel: (s.st_uid, s.st_gid, oct(s.st_mode & 0o777)) for rel, s in st.items()} == {
        ".": (1000, 1000, "0o755"),
        ".auth_token": (1000, 1000, "0o600"),
        "config.yaml": (1000, 1000, "0o644"),
        "skills": (1000, 1000, "0o755"),
        "skills/a/SKILL.md": (1000, 1000, "0o644"),
    }
    assert (host / ".auth_token").read_bytes() == token
    assert await sh(backend, ws_id, "cat /configs/skills/a/SKILL.md") == "a"
    assert sorted(p.name for p in host.iterdir()) == [".auth_token", "config.yaml", "skills"]  # no probe left
    # what the agent writes lands there too, and the whole dir goes with the volume
    await sh(backend, ws_id, "echo mine > /configs/agent-notes.md")
    assert (host / "agent-notes.md").read_text() == "mine\n"
    await backend.stop(ws_id)
    await backend.remove_volumes(ws_id)
    assert configs_volume(ws_id) not in {v.name for v in client.volumes.list()}
    assert not host.exists() and not host.parent.exists()


async def test_restart_never_writes_through_links_the_agent_planted(
    backend: DockerBackend, ids: WorkspaceIds, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    ws_id = ids.new()
    await backend.start(spec_for(ws_id))
    # the agent swaps its config file and a directory for links to host paths, and leaves a directory
    # where the token goes
    # (on Swarm the token is a secret mounted over its file: the agent cannot remove it at all)
    token_swap = "" if isinstance(backend, SwarmBackend) else " && rm /configs/.auth_token"
    token_swap += "" if isinstance(backend, SwarmBackend) else " && mkdir -p /configs/.auth_token/sub"
    await sh(
        backend,
        ws_id,
        f"rm /configs/config.yaml && ln -s {victim} /configs/config.yaml"
        f" && ln -s {victim_dir} /configs/skills{token_swap}",
    )
    files = {"config.yaml": b"name: Fresh\n", ".auth_token": b"rotated", "skills/x/SKILL.md": b"x"}
    started = await backend.start(spec_for(ws_id, config_files=files))
    await wait_for_reply(started.url)
    assert victim.read_text() == "keep" and list(victim_dir.iterdir()) == []
    assert await sh(backend, ws_id, "cat /configs/config.yaml") == "name: Fresh\n"
    assert await sh(backend, ws_id, "cat /configs/.auth_token") == "rotated"
    assert await sh(backend, ws_id, "stat -c '%F %u' /configs/skills /configs/config.yaml") == (
        "directory 1000\nregular file 1000\n"
    )


@docker_only
@pytest.mark.parametrize("tier", [2, 1])  # T1: read-only rootfs, seeded through a helper container
async def test_a_volume_made_before_stays_engine_managed_and_still_gets_its_files(
    backend: DockerBackend, ids: WorkspaceIds, client: Any, tier: int
) -> None:
    ws_id = ids.new()
    client.volumes.create(configs_volume(ws_id), labels={"molecule.platform.managed": "true"})
    started = await backend.start(spec_for(ws_id, tier=tier))
    await wait_for_reply(started.url)
    assert volume_device(client, ws_id) == ""
    assert not workspace_config_dir(backend.settings, ws_id).exists()  # went in with put_archive
    listing = await sh(
        backend, ws_id, "stat -c '%a %u %n' /configs /configs/.auth_token /configs/config.yaml"
    )
    assert listing.split("\n")[:3] == [
        "755 1000 /configs",
        "600 1000 /configs/.auth_token",
        "644 1000 /configs/config.yaml",
    ]
    assert client.containers.list(all=True, filters={"name": f"ws-{ws_id[:12]}-seed"}) == []


@docker_only
async def test_engine_that_does_not_see_our_dirs_falls_back_to_engine_volumes(
    backend: DockerBackend, ids: WorkspaceIds, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what a server in a container with the host's docker socket finds: the marker read back through
    # the engine is not the one written (here forced; on this host the engine does see our dirs)
    monkeypatch.setattr(docker_backend, "_probe_matches", lambda data, content: False)
    first, second = ids.new(), ids.new()
    started = await backend.start(spec_for(first))
    assert echoed_text(await wait_for_reply(started.url, "fell back")) == "fell back"
    assert volume_device(client, first) == ""  # recreated engine-managed
    listing = await sh(backend, first, "stat -c '%a %u %n' /configs/.auth_token /configs/config.yaml")
    assert listing.split("\n")[:2] == ["600 1000 /configs/.auth_token", "644 1000 /configs/config.yaml"]
    host = workspace_config_dir(backend.settings, first)
    assert not (host / ".auth_token").exists() and not (host / "config.yaml").exists()
    assert [c.name for c in client.containers.list(all=True, filters={"name": f"ws-{first[:12]}"})] == [
        f"ws-{first[:12]}"
    ]
    await backend.start(spec_for(second))  # decided once: no second attempt at a host-bound volume
    assert volume_device(client, second) == ""
