"""The orphan sweeper on a real Docker engine: our containers whose row is removed or gone are reaped
with their config volumes; a live row's container, a failed stop and unlabelled `ws-…` containers are
left alone. The sweep sees only this test's containers (other suites share the engine). On the Docker
backend and on the Swarm backend (whose instances are services).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import docker.errors
import pytest

from tests.integration.provisioner_support import (
    AGENT_IMAGE,
    BACKENDS,
    engine_fixture,  # noqa: F401 - registers the engine fixture
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
    task_container,
)
from workspace_server.loops.orphans import sweep_orphans
from workspace_server.provisioner.base import Instance, StartSpec
from workspace_server.provisioner.docker import configs_volume
from workspace_server.workspaces import store as ws_store

pytestmark = pytest.mark.docker


class OnlyThese:
    """The app's docker backend, restricted to the given workspaces/names; stops of `stuck` ids fail."""

    name = "docker"

    def __init__(self, inner: Any, ids: set[str], names: set[str], stuck: set[str]) -> None:
        self.inner, self.ids, self.names, self.stuck = inner, ids, names, stuck

    async def list_instances(self) -> list[Instance]:
        every = await self.inner.list_instances()
        return [i for i in every if i.workspace_id in self.ids or i.name in self.names]

    async def stop(self, ws_id: str) -> None:
        if ws_id in self.stuck:
            raise RuntimeError("engine said no")
        await self.inner.stop(ws_id)

    async def remove_volumes(self, ws_id: str, workspace: bool = False) -> None:
        await self.inner.remove_volumes(ws_id, workspace)


def exists(engine: Any, kind: str, name: str) -> bool:
    try:
        getattr(engine, kind).get(name)
    except docker.errors.NotFound:
        return False
    return True


def instance_exists(engine: Any, kind: str, wid: str) -> bool:
    return exists(engine, "services" if kind == "swarm" else "containers", f"ws-{wid[:12]}")


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "swarm":
        request.getfixturevalue("swarm_manager")
    return str(request.param)


async def test_orphans_are_reaped_and_nothing_else(client_factory: Any, engine: Any, kind: str) -> None:
    client = await client_factory(WORKSPACE_BACKEND=kind, DOCKER_NETWORK_MODE="host")
    ctx = client.app.state.ctx
    backend = ctx.backend
    removed, ghost, live, stuck = (str(uuid.uuid4()) for _ in range(4))
    async with ctx.engine.begin() as conn:
        await ws_store.insert_workspace(conn, id=removed, name="gone", status="removed")
        await ws_store.insert_workspace(conn, id=live, name="kept", status="online")
    bare = f"ws-{uuid.uuid4().hex[:12]}"  # looks like ours, carries no label
    try:
        for wid in (removed, ghost, live, stuck):
            spec = StartSpec(
                workspace_id=wid,
                image=AGENT_IMAGE,
                runtime="echo",
                config_files={"config.yaml": b"name: orphan test\n"},
                platform_url="http://127.0.0.1:9",
            )
            await backend.start(spec)
        engine.containers.run(AGENT_IMAGE, ["sleep", "300"], name=bare, detach=True)

        scoped = OnlyThese(backend, {removed, ghost, live, stuck}, {bare}, {stuck})
        assert sorted(await sweep_orphans(ctx, scoped)) == sorted([removed, ghost])

        for wid in (removed, ghost):
            assert not instance_exists(engine, kind, wid)
            assert not exists(engine, "volumes", configs_volume(wid))
        assert task_container(engine, live).status == "running"
        assert instance_exists(engine, kind, stuck)
        assert exists(engine, "volumes", configs_volume(stuck))  # a failed stop keeps the volume
        assert exists(engine, "containers", bare)
    finally:
        for wid in (removed, ghost, live, stuck):
            await backend.stop(wid)
            await backend.remove_volumes(wid, workspace=True)
        with contextlib.suppress(docker.errors.APIError):
            engine.containers.get(bare).remove(force=True)
