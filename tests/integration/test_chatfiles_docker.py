"""Chat uploads and downloads in a real Docker container (the Docker backend's storage), spec 04 §4."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest

from tests.integration.provisioner_support import AGENT_IMAGE, docker_client, need_agent_image
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.provisioner.base import instance_name
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"


@pytest.fixture
def engine() -> Iterator[Any]:
    client = docker_client()
    need_agent_image(client)
    yield client
    client.close()


def _start_container(client: Any, ws_id: str) -> Any:
    """A running `ws-<id12>` container with a /workspace volume, as the Docker backend lays it out."""
    return client.containers.run(
        AGENT_IMAGE,
        ["python3", "-c", "import time; time.sleep(600)"],
        name=instance_name(ws_id),
        user="0:0",
        volumes={f"ws-chatfiles-test-{ws_id[:12]}": {"bind": "/workspace", "mode": "rw"}},
        network_mode="none",
        detach=True,
    )


def _read_in_container(container: Any, path: str) -> bytes:
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        assert member is not None
        data = tar.extractfile(member)
        assert data is not None
        return data.read()


async def test_round_trip_in_container(client_factory: Any, engine: Any) -> None:
    from workspace_server.provisioner.docker import DockerBackend

    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx
    ws_id = new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name="ws", status="online")
        h = {"Authorization": f"Bearer {await issue_workspace_token(conn, ws_id)}"}
    backend = DockerBackend(ctx.settings, engine)
    ctx.backend = backend

    r = await client.post(
        f"/workspaces/{ws_id}/chat/uploads", files=[("files", ("a.txt", b"x", "text/plain"))], headers=h
    )
    assert (r.status_code, r.json()) == (503, {"error": "workspace container not running"})

    container = await anyio.to_thread.run_sync(_start_container, engine, ws_id)
    try:
        payload = bytes(range(256)) * 100
        r = await client.post(
            f"/workspaces/{ws_id}/chat/uploads",
            files=[("files", ("data file.bin", payload, "application/octet-stream"))],
            headers=h,
        )
        assert r.status_code == 200, r.text
        [entry] = r.json()["files"]
        path = entry["uri"].removeprefix("workspace:")
        assert path.startswith("/workspace/.molecule/chat-uploads/") and path.endswith("-data_file.bin")
        assert await anyio.to_thread.run_sync(_read_in_container, container, path) == payload

        r = await client.get(f"/workspaces/{ws_id}/chat/download", params={"path": path}, headers=h)
        assert r.status_code == 200
        assert r.content == payload
        assert r.headers["content-length"] == str(len(payload))

        await backend.exec(ws_id, ["ln", "-s", "/etc/passwd", "/workspace/link"])
        for p, status, message in [
            ("/workspace/.molecule", 400, "path is not a regular file"),
            ("/workspace/link", 400, "path is not a regular file"),
            ("/workspace/missing", 404, "file not found"),
        ]:
            r = await client.get(f"/workspaces/{ws_id}/chat/download", params={"path": p}, headers=h)
            assert (r.status_code, r.json()) == (status, {"error": message}), p

        await anyio.to_thread.run_sync(lambda: container.stop(timeout=0))
        r = await client.get(f"/workspaces/{ws_id}/chat/download", params={"path": path}, headers=h)
        assert (r.status_code, r.json()) == (503, {"error": "workspace container not running"})
    finally:
        await anyio.to_thread.run_sync(lambda: container.remove(force=True, v=True))
        volume = engine.volumes.get(f"ws-chatfiles-test-{ws_id[:12]}")
        await anyio.to_thread.run_sync(lambda: volume.remove(force=True))
