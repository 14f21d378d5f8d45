"""Real workspaces on Docker (host networking): create → online → restart → pause/resume → delete;
a killed container comes back by itself; secrets reach the container's env (on Swarm: as Swarm secrets,
the env naming their files). Runs on SQLite and Postgres,
and on the Docker and the Swarm backends (a single-node swarm).
"""

from __future__ import annotations

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
    BACKENDS,
    SERVICE_NAME_LABEL,
    engine_fixture,  # noqa: F401 - registers the engine fixture
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
)
from workspace_server.config import Settings
from workspace_server.provisioner.docker import DockerBackend, configs_volume, workspace_volume
from workspace_server.provisioner.swarm import SwarmBackend
from workspace_server.workspaces.files import workspace_config_dir

pytestmark = pytest.mark.docker


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "swarm":
        request.getfixturevalue("swarm_manager")
    return str(request.param)


def container(engine: Any, wid: str) -> Any | None:
    """The workspace's running container: the Docker backend's, or the Swarm service's task."""
    tasks = engine.containers.list(filters={"label": f"{SERVICE_NAME_LABEL}=ws-{wid[:12]}"})
    if tasks:
        return tasks[0]
    try:
        return engine.containers.get(f"ws-{wid[:12]}")
    except docker.errors.NotFound:
        return None


def managed_labels(engine: Any, kind: str, wid: str) -> dict[str, str]:
    """The labels the backend put on the workspace's instance (a Swarm backend's are the service's)."""
    if kind == "swarm":
        return dict(engine.services.get(f"ws-{wid[:12]}").attrs["Spec"]["Labels"])
    return dict(engine.containers.get(f"ws-{wid[:12]}").labels)


def backend_of(settings: Settings) -> DockerBackend:
    return SwarmBackend(settings) if settings.WORKSPACE_BACKEND == "swarm" else DockerBackend(settings)


async def configs_file(p: Platform, wid: str, name: str) -> bytes:
    """A file of /configs as the agent sees it."""
    backend = backend_of(p.settings)
    try:
        res = await backend.exec(wid, ["cat", f"/configs/{name}"])
    finally:
        await backend.close()
    assert res.exit_code == 0, res
    return res.stdout


def volume_exists(engine: Any, name: str) -> bool:
    try:
        engine.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True


async def online(p: Platform, wid: str) -> dict[str, Any]:
    view = await p.wait_status(wid, "online")
    assert view["url"].startswith("http://127.0.0.1:")
    return view


async def test_create_restart_pause_resume_delete(
    platform_factory: PlatformFactory, engine: Any, kind: str
) -> None:
    p: Platform = await platform_factory(kind)
    wid = await p.create("Echo Agent")
    view = await online(p, wid)
    assert await agent_reply(view["url"], "hello there") == "hello there"
    r = await p.a2a(wid, "via the platform")
    assert r.status_code == 200 and r.json()["result"]["parts"][0]["text"] == "via the platform"
    first = container(engine, wid)
    assert first is not None and first.status == "running"
    assert managed_labels(engine, kind, wid)["molecule.platform.managed"] == "true"
    host = workspace_config_dir(p.settings, wid)
    if kind == "docker":
        # local engine: the config volume is the workspace's host config dir, written there directly
        assert engine.volumes.get(configs_volume(wid)).attrs["Options"]["device"] == str(host)
    first_token = await configs_file(p, wid, ".auth_token")
    assert b"Echo Agent" in await configs_file(p, wid, "config.yaml")

    r = await p.http.post(f"/workspaces/{wid}/restart")
    assert (r.status_code, r.text) == (
        200,
        '{"config_dir":"existing-volume","reset_session":false,"status":"provisioning"}',
    )
    await p.wait_for(lambda: _replaced(engine, wid, first.id), "a new container")
    view = await online(p, wid)
    assert await agent_reply(view["url"], "after restart") == "after restart"
    assert await configs_file(p, wid, ".auth_token") not in (b"", first_token)  # rotated
    assert b"Echo Agent" in await configs_file(p, wid, "config.yaml")  # the reused config is still there

    r = await p.http.post(f"/workspaces/{wid}/pause")
    assert (r.status_code, r.json()) == (200, {"paused_count": 1, "status": "paused"})
    view = await p.get(wid)
    assert (view["status"], view["url"]) == ("paused", "")
    assert container(engine, wid) is None
    again = await p.http.post(f"/workspaces/{wid}/pause")
    assert (again.status_code, again.json()) == (404, {"error": "workspace not found or already paused"})

    r = await p.http.post(f"/workspaces/{wid}/resume")
    assert (r.status_code, r.json()) == (200, {"resumed_count": 1, "status": "provisioning"})
    view = await online(p, wid)
    assert await agent_reply(view["url"], "resumed") == "resumed"

    types = await p.event_types(wid)
    assert types[0] == "WORKSPACE_PROVISIONING"
    assert "WORKSPACE_PAUSED" in types and types.count("WORKSPACE_ONLINE") >= 3

    r = await p.http.delete(f"/workspaces/{wid}")
    assert (r.status_code, r.json()) == (200, {"cascade_deleted": 0, "status": "removed"})
    assert container(engine, wid) is None
    assert not volume_exists(engine, configs_volume(wid))
    assert not host.exists()  # the config files went with their volume
    assert volume_exists(engine, workspace_volume(wid))  # user data survives a plain delete


async def _replaced(engine: Any, wid: str, old_id: str) -> bool:
    c = container(engine, wid)
    return c is not None and c.id != old_id


async def test_killed_container_goes_offline_and_comes_back(
    platform_factory: PlatformFactory, engine: Any, kind: str
) -> None:
    p: Platform = await platform_factory(kind, run_loops=True)
    wid = await p.create("Crashy Agent")
    await online(p, wid)
    first = container(engine, wid)
    assert first is not None
    first.kill()  # the restart policy does not revive a killed container: only the sweep can

    await p.wait_for(lambda: _replaced(engine, wid, first.id), "the health sweep's restart")
    view = await online(p, wid)
    assert await agent_reply(view["url"], "alive again") == "alive again"
    types = await p.event_types(wid)
    offline = types.index("WORKSPACE_OFFLINE")
    assert "WORKSPACE_PROVISIONING" in types[offline:] and "WORKSPACE_ONLINE" in types[offline:]


async def test_secrets_arrive_as_container_env_and_purge_removes_everything(
    platform_factory: PlatformFactory, engine: Any, kind: str
) -> None:
    p: Platform = await platform_factory(kind)
    r = await p.http.post("/settings/secrets", json={"key": "SHARED_KEY", "value": "from-global"})
    assert r.status_code == 200, r.text
    await p.http.post("/settings/secrets", json={"key": "ONLY_GLOBAL", "value": "g"})
    wid = await p.create("Env Agent", role="qa-lead", secrets={"SHARED_KEY": "from-workspace", "OWN": "w"})
    await online(p, wid)

    backend = backend_of(p.settings)
    try:
        res = await backend.exec(wid, ["env"])
        env = dict(line.split("=", 1) for line in res.stdout.decode().splitlines() if "=" in line)
        if kind == "swarm":  # Swarm secrets: the env names each file, the agent reads it (`<KEY>_FILE`)
            for key in ("SHARED_KEY", "ONLY_GLOBAL", "OWN"):
                assert key not in env and env[f"{key}_FILE"] == f"/run/secrets/{key}"
                env[key] = (await backend.exec(wid, ["cat", f"/run/secrets/{key}"])).stdout.decode()
    finally:
        await backend.close()
    assert env["SHARED_KEY"] == "from-workspace"  # workspace over global
    assert env["ONLY_GLOBAL"] == "g" and env["OWN"] == "w"
    assert env["WORKSPACE_ID"] == wid and env["PLATFORM_URL"] == p.url
    assert env["GIT_AUTHOR_EMAIL"] == "env-agent@agents.moleculesai.app"
    assert env["MOLECULE_AGENT_ROLE"] == "Qa-Lead"  # role, then the gh-identity mutator

    r = await p.http.delete(f"/workspaces/{wid}?purge=true")
    assert (r.status_code, r.json()) == (200, {"cascade_deleted": 0, "status": "purged"})
    assert container(engine, wid) is None
    assert not volume_exists(engine, configs_volume(wid))
    assert not volume_exists(engine, workspace_volume(wid))
    assert not workspace_config_dir(p.settings, wid).parent.exists()
    if kind == "swarm":
        assert engine.secrets.list(filters={"label": f"molecule.workspace.id={wid}"}) == []
