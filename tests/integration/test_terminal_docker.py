"""`GET /workspaces/:id/terminal` on a real container of the reference agent image (uvicorn + websockets),
on the Docker backend and on the Swarm backend (a service's task container)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.provisioner_support import (
    AGENT_IMAGE,
    BACKENDS,
    docker_client,
    need_agent_image,
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
)
from tests.integration.terminal_support import (
    LiveFactory,
    Rows,
    check_handshake_rules,
    check_shell_session,
    dev_server,
    refused,
    start_agent,
    tracked_backend,
)
from workspace_server.config import Settings
from workspace_server.provisioner import StartSpec
from workspace_server.provisioner.docker import DockerBackend
from workspace_server.provisioner.swarm import SwarmBackend

pytestmark = pytest.mark.docker


@pytest.fixture
def engine() -> Iterator[Any]:
    c = docker_client()
    need_agent_image(c)
    yield c
    c.close()


@pytest.fixture(params=BACKENDS)
async def backend(
    engine: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[DockerBackend]:
    settings = Settings(DATA_DIR=tmp_path / "data", DOCKER_NETWORK_MODE="host")
    if request.param == "swarm":
        request.getfixturevalue("swarm_manager")
    kind = SwarmBackend if request.param == "swarm" else DockerBackend
    async with tracked_backend(kind(settings)) as b:
        yield b


async def start_container(backend: DockerBackend, ws_id: str) -> None:
    spec = StartSpec(
        workspace_id=ws_id,
        image=AGENT_IMAGE,
        runtime="echo",
        config_files={"config.yaml": b"name: Term\n", ".auth_token": b"tok"},
        platform_url="http://127.0.0.1:9",
    )
    await start_agent(backend, spec)


async def test_terminal_runs_commands_in_the_container(
    live_server_factory: LiveFactory, db_url: str, backend: DockerBackend
) -> None:
    srv = dev_server(live_server_factory, backend)
    rows = Rows(db_url)
    ws_id = await rows.workspace()
    sibling = await rows.workspace("Sibling Root")

    status, body = await refused(srv, ws_id)
    assert (status, body) == (404, {"error": "container not running"})

    await start_container(backend, ws_id)
    await check_shell_session(srv, ws_id)
    await check_shell_session(srv, ws_id, **{"X-Workspace-ID": sibling})  # peers may
    await check_handshake_rules(srv, rows, ws_id)


async def test_terminal_without_backend_is_503(live_server_factory: LiveFactory, db_url: str) -> None:
    srv = live_server_factory(MOLECULE_ENV="development")
    ws_id = await Rows(db_url).workspace()
    assert await refused(srv, ws_id) == (503, {"error": "Docker not available"})


async def test_terminal_needs_workspace_auth(live_server_factory: LiveFactory, db_url: str) -> None:
    srv = live_server_factory(ADMIN_TOKEN="admin-secret")
    rows = Rows(db_url)
    ws_id = await rows.workspace()
    assert await refused(srv, ws_id) == (401, {"error": "missing workspace auth token"})
    assert await refused(srv, ws_id, Authorization="Bearer wrong") == (
        401,
        {"error": "invalid workspace auth token"},
    )
    # the admin token passes WorkspaceAuth but is no workspace's token: claiming another id is refused
    other = await rows.workspace("Other")
    claim = {"Authorization": "Bearer admin-secret", "X-Workspace-ID": other}
    assert await refused(srv, ws_id, **claim) == (401, {"error": "invalid token for claimed workspace"})
    assert await refused(srv, ws_id, Authorization="Bearer admin-secret") == (
        503,
        {"error": "Docker not available"},
    )
