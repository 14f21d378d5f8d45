"""Image pulls on start against a local registry (Debian's docker-registry on 127.0.0.1).

Moving tags are re-pulled on every start (a republished `:latest` is picked up), pinned tags are not, a
failed pull falls back to the cached image, and a missing image with a failed pull is `ImageNotFound`.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from tests.conftest import free_port
from tests.integration.provisioner_support import (
    AGENT_IMAGE,
    BACKENDS,
    Registry,
    WorkspaceIds,
    cleanup,
    docker_client,
    need_agent_image,
    need_registry_binary,
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
    task_container,
    wait_for_reply,
)
from workspace_server.config import Settings
from workspace_server.provisioner import ImageNotFound, PullProgress, StartSpec
from workspace_server.provisioner.docker import DockerBackend
from workspace_server.provisioner.swarm import SwarmBackend

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry for the module: the agent's layers are uploaded once, later pushes mount them."""
    need_registry_binary()
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture
def client() -> Iterator[Any]:
    c = docker_client()
    need_agent_image(c)
    yield c
    c.close()


@pytest.fixture(params=BACKENDS)
async def backend(
    client: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[DockerBackend]:
    """The moving-tag rule on each engine backend (Swarm: applied on the node before the service exists,
    which then names the resolved image by id)."""
    settings = Settings(DATA_DIR=tmp_path / "data", DOCKER_NETWORK_MODE="host")
    if request.param == "swarm":
        request.getfixturevalue("swarm_manager")
    b = SwarmBackend(settings) if request.param == "swarm" else DockerBackend(settings)
    yield b
    await b.close()


@pytest.fixture
async def ids(backend: DockerBackend) -> AsyncIterator[WorkspaceIds]:
    w = WorkspaceIds()
    yield w
    await cleanup(backend, w.ids)


@pytest.fixture
def images(client: Any) -> Iterator[dict[str, Any]]:
    """Image A (the agent) and a distinct image B built on it; every tag and digest made here goes after.

    Tests request this fixture before `ids`, so their containers are removed before these images.
    """
    tag = f"molecule-test/variant:{uuid.uuid4().hex[:10]}"
    dockerfile = f"FROM {AGENT_IMAGE}\nLABEL molecule.test.variant={tag.rsplit(':', 1)[1]}\n"
    b, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    made: list[str] = [tag]
    a = client.images.get(AGENT_IMAGE)
    assert a.id != b.id
    yield {"a": a, "b": b, "made": made}
    repos = {ref.rpartition(":")[0] for ref in made}
    for ref in made:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(ref)
    # pushes leave `repo@sha256:…` references on the agent image: drop ours
    a.reload()
    for digest_ref in a.attrs.get("RepoDigests") or []:
        if digest_ref.partition("@")[0] in repos:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(digest_ref)


def tag_as(client: Any, image: Any, ref: str, made: list[str]) -> None:
    repo, _, tag = ref.rpartition(":")
    assert image.tag(repo, tag)
    made.append(ref)


def push(client: Any, ref: str) -> None:
    repo, _, tag = ref.rpartition(":")
    for ev in client.api.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in ev, ev


def delete_manifest(reg: Registry, ref: str) -> None:
    path, _, tag = ref.removeprefix(reg.host + "/").rpartition(":")
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    head = httpx.head(f"http://{reg.host}/v2/{path}/manifests/{tag}", headers=accept)
    digest = head.headers["Docker-Content-Digest"]
    assert httpx.delete(f"http://{reg.host}/v2/{path}/manifests/{digest}").status_code == 202


def running_image_id(client: Any, ws_id: str) -> str:
    return str(task_container(client, ws_id).attrs["Image"])


def spec_for(ws_id: str, image: str, events: list[PullProgress]) -> StartSpec:
    return StartSpec(
        workspace_id=ws_id,
        image=image,
        runtime="echo",
        config_files={"config.yaml": b"name: Pull Test\n"},
        platform_url="http://127.0.0.1:9",
        on_pull_progress=events.append,
    )


async def test_moving_latest_is_repulled_on_start(
    images: dict[str, Any],
    backend: DockerBackend,
    ids: WorkspaceIds,
    client: Any,
    registry: Registry,
) -> None:
    reg = registry
    ref = f"{reg.host}/molecule-test/agent-{uuid.uuid4().hex[:8]}:latest"
    a, b, made = images["a"], images["b"], images["made"]
    tag_as(client, a, ref, made)
    push(client, ref)
    ws_id = ids.new()
    events: list[PullProgress] = []
    await backend.start(spec_for(ws_id, ref, events))
    assert running_image_id(client, ws_id) == a.id
    assert events[0].status == "pulling" and events[-1].status == "pulled"

    # Republish :latest as B in the registry while this host still has A under that tag.
    tag_as(client, b, ref, made)
    push(client, ref)
    tag_as(client, a, ref, made)
    assert client.images.get(ref).id == a.id

    events.clear()
    started = await backend.start(spec_for(ws_id, ref, events))
    assert running_image_id(client, ws_id) == b.id  # the restart picked up the new :latest
    assert events[-1].status == "pulled"
    assert any(e.layer for e in events)  # per-layer progress was reported
    await wait_for_reply(started.url)


async def test_pinned_tag_is_not_repulled_but_pulled_when_missing(
    images: dict[str, Any],
    backend: DockerBackend,
    ids: WorkspaceIds,
    client: Any,
    registry: Registry,
) -> None:
    reg = registry
    ref = f"{reg.host}/molecule-test/agent-{uuid.uuid4().hex[:8]}:v1.2.3"
    a, b, made = images["a"], images["b"], images["made"]
    # The registry holds B under the pinned tag; this host holds A under it (pushed from here once).
    tag_as(client, a, ref, made)
    push(client, ref)
    tag_as(client, b, ref, made)
    push(client, ref)
    tag_as(client, a, ref, made)

    ws_id = ids.new()
    events: list[PullProgress] = []
    await backend.start(spec_for(ws_id, ref, events))
    assert running_image_id(client, ws_id) == a.id  # no re-pull of a pinned tag
    assert events == []

    await backend.stop(ws_id)
    client.images.remove(ref)  # untag only: A is still the agent image
    await backend.start(spec_for(ws_id, ref, events))
    assert running_image_id(client, ws_id) == b.id  # missing → pulled from the registry
    assert events[-1].status == "pulled"


async def test_failed_pull_falls_back_to_the_cached_image(
    images: dict[str, Any],
    backend: DockerBackend,
    ids: WorkspaceIds,
    client: Any,
    registry: Registry,
) -> None:
    reg = registry
    ref = f"{reg.host}/molecule-test/agent-{uuid.uuid4().hex[:8]}:latest"
    tag_as(client, images["a"], ref, images["made"])
    push(client, ref)
    delete_manifest(reg, ref)  # the registry no longer has it: the re-pull of :latest fails

    ws_id = ids.new()
    events: list[PullProgress] = []
    started = await backend.start(spec_for(ws_id, ref, events))
    assert running_image_id(client, ws_id) == images["a"].id
    assert [e.status for e in events] == ["pulling", "using cached image"]
    await wait_for_reply(started.url)


async def test_missing_image_with_failed_pull_is_image_not_found(
    backend: DockerBackend, ids: WorkspaceIds, client: Any
) -> None:
    ref = f"127.0.0.1:{free_port()}/molecule-test/nothing-{uuid.uuid4().hex[:8]}:latest"
    ws_id = ids.new()
    # a container from an earlier start is not left running by a start that fails
    await backend.start(StartSpec(ws_id, AGENT_IMAGE, "echo", platform_url="http://127.0.0.1:9"))
    events: list[PullProgress] = []
    with pytest.raises(ImageNotFound) as err:
        await backend.start(spec_for(ws_id, ref, events))
    assert err.value.message == f'image "{ref}" not found: it is not available locally and pulling it failed'
    assert [e.status for e in events] == ["pulling", "failed"]
    assert client.containers.list(all=True, filters={"name": f"ws-{ws_id[:12]}"}) == []
