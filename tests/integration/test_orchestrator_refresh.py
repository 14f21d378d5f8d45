"""`POST /admin/workspace-images/refresh` against a local registry (Debian's docker-registry): the echo
runtime's `:latest` is republished, a refresh without recreate only pulls, a refresh with recreate
restarts the workspace on the new image. Pull progress reaches the workspace's event stream. On the Docker
and the Swarm backends.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
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
    BACKENDS,
    Registry,
    docker_client,
    need_agent_image,
    need_registry_binary,
    swarm_manager_fixture,  # noqa: F401 - registers the swarm_manager fixture
    task_container,
)
from workspace_server.events.bus import Event

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    need_registry_binary()
    reg = Registry(tmp_path_factory.mktemp("refresh-registry"))
    yield reg
    reg.stop()


@pytest.fixture
def engine() -> Iterator[Any]:
    client = docker_client()
    need_agent_image(client)
    yield client
    client.close()


@pytest.fixture
def published(engine: Any, registry: Registry) -> Iterator[dict[str, Any]]:
    """`<registry>/…:latest` pushed as the agent image A, and a distinct image B to republish later."""
    ref = f"{registry.host}/molecule-test/refresh-{uuid.uuid4().hex[:8]}:latest"
    repo = ref.rpartition(":")[0]
    a = engine.images.get(AGENT_IMAGE)
    dockerfile = f"FROM {AGENT_IMAGE}\nLABEL molecule.test.refresh={uuid.uuid4().hex}\n"
    b, _ = engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True)
    assert a.tag(repo, "latest")
    push(engine, ref)
    yield {"ref": ref, "a": a, "b": b}
    for image in (ref, b.id):
        with contextlib.suppress(docker.errors.APIError):
            engine.images.remove(image, force=True)
    a.reload()
    for digest_ref in a.attrs.get("RepoDigests") or []:
        if digest_ref.partition("@")[0] == repo:
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(digest_ref)


def push(engine: Any, ref: str) -> None:
    repo, _, tag = ref.rpartition(":")
    for ev in engine.api.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in ev, ev


def running_image(engine: Any, wid: str) -> tuple[str, str]:
    c = task_container(engine, wid)
    return str(c.id), str(c.attrs["Image"])


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "swarm":
        request.getfixturevalue("swarm_manager")
    return str(request.param)


async def test_refresh_pulls_then_recreates_on_the_new_image(
    platform_factory: PlatformFactory, engine: Any, published: dict[str, Any], kind: str
) -> None:
    ref, a, b = published["ref"], published["a"], published["b"]
    p: Platform = await platform_factory(kind, RUNTIME_IMAGES=json.dumps({"echo": ref}))
    seen: list[Event] = []
    p.ctx.bus.add_listener(seen.append)
    wid = await p.create("Refreshed Agent")
    await p.wait_status(wid, "online")
    first_id, image = running_image(engine, wid)
    assert image == a.id
    progress = [
        e.payload for e in seen if e.event == "WORKSPACE_PROVISION_PROGRESS" and e.workspace_id == wid
    ]
    assert progress[0]["status"] == "pulling" and progress[-1]["status"] == "pulled"
    assert all(pl["image"] == ref for pl in progress)

    # republish :latest as B in the registry; this host still has A under that tag
    repo = ref.rpartition(":")[0]
    assert b.tag(repo, "latest")
    push(engine, ref)
    assert a.tag(repo, "latest")

    r = await p.http.post("/admin/workspace-images/refresh?runtime=echo&recreate=false")
    assert (r.status_code, r.text) == (200, '{"pulled":["echo"],"failed":[],"recreated":[]}')
    assert engine.images.get(ref).id == b.id
    assert running_image(engine, wid) == (first_id, a.id)  # pull only: the workspace is untouched

    r = await p.http.post("/admin/workspace-images/refresh?runtime=echo")
    assert r.status_code == 200, r.text
    assert r.json() == {"pulled": ["echo"], "failed": [], "recreated": [f"ws-{wid[:12]}"]}
    await p.wait_for(lambda: _on_image(engine, wid, first_id, b.id), "the recreated container")
    view = await p.wait_status(wid, "online")
    assert await agent_reply(view["url"], "fresh") == "fresh"


async def _on_image(engine: Any, wid: str, old_id: str, image: str) -> bool:
    try:
        cid, img = running_image(engine, wid)
    except docker.errors.NotFound:
        return False
    return cid != old_id and img == image
