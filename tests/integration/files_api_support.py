"""Helpers for the files-API tests: workspace rows, the backend seam, and the contract every backend
must satisfy while the workspace runs (collected by pytest, but holds no tests of its own)."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.provisioner_support import wait_for_reply
from workspace_server.context import AppContext
from workspace_server.provisioner import Backend, StartSpec
from workspace_server.workspaces.store import insert_workspace

CONFIG_YAML = (
    b"name: Files Agent\nskills: [echo]\nshared_context:\n  - ctx/a.md\n  - ../escape.md\n  - missing.md\n"
)


def ctx_of(client: httpx.AsyncClient) -> AppContext:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    return ctx


async def add_workspace(client: httpx.AsyncClient, name: str = "Files Agent", runtime: str = "echo") -> str:
    ws_id = str(uuid.uuid4())
    async with ctx_of(client).engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name=name, runtime=runtime, status="online")
    return ws_id


def install_backend(client: httpx.AsyncClient, backend: Backend) -> list[str]:
    """Make `backend` the app's; the returned list (also `backend.started`) collects the workspaces that
    `start_echo_agent` starts on it, for the test's teardown."""
    ctx_of(client).backend = backend
    started: list[str] = []
    backend.started = started  # type: ignore[attr-defined]
    return started


async def start_echo_agent(backend: Backend, ws_id: str, image: str) -> None:
    """Start the echo agent of `ws_id` with CONFIG_YAML on an installed backend and wait until it answers."""
    backend.started.append(ws_id)  # type: ignore[attr-defined]
    spec = StartSpec(
        workspace_id=ws_id,
        image=image,
        runtime="echo",
        config_files={"config.yaml": CONFIG_YAML, ".auth_token": b"tok"},
        platform_url="http://127.0.0.1:9",
    )
    started = await backend.start(spec)
    await wait_for_reply(started.url)


def files_url(ws_id: str, path: str = "") -> str:
    return f"/workspaces/{ws_id}/files" + (f"/{path}" if path else "")


async def check_running_contract(client: httpx.AsyncClient, ws_id: str) -> None:
    """Write, read back, list, delete, 404 and traversal on a running workspace."""
    # write then read back, byte for byte (the reference trimmed whitespace; we do not)
    resp = await client.put(files_url(ws_id, "notes/today.md"), json={"content": "hello\nworld\n"})
    assert resp.status_code == 200
    assert resp.content == b'{"path":"notes/today.md","status":"saved"}'
    resp = await client.get(files_url(ws_id, "notes/today.md"))
    assert resp.status_code == 200
    assert resp.json() == {"content": "hello\nworld\n", "path": "notes/today.md", "size": 12}
    unicode = "h\u00e9llo \u2603"
    await client.put(files_url(ws_id, "u.txt"), json={"content": unicode})
    assert (await client.get(files_url(ws_id, "u.txt"))).json()["size"] == len(unicode.encode())

    # listing: depth 1 shows the dir, depth 2 its file; sizes of files, 0 for dirs
    top = (await client.get(files_url(ws_id), params={"depth": "1"})).json()
    assert {"path": "notes", "size": 0, "dir": True} in top
    assert {"path": "config.yaml", "size": len(CONFIG_YAML), "dir": False} in top
    assert all(list(e) == ["path", "size", "dir"] for e in top)
    assert not any(e["path"].startswith("notes/") for e in top)
    deep = (await client.get(files_url(ws_id), params={"depth": "2"})).json()
    assert {"path": "notes/today.md", "size": 12, "dir": False} in deep
    sub = (await client.get(files_url(ws_id), params={"path": "notes"})).json()
    assert sub == [{"path": "today.md", "size": 12, "dir": False}]

    # a missing file is a 404 (the reference answered 200 with empty content)
    resp = await client.get(files_url(ws_id, "nope.md"))
    assert (resp.status_code, resp.json()) == (404, {"error": "file not found"})
    resp = await client.get(files_url(ws_id, "notes"))  # a directory is not a file
    assert resp.status_code == 404

    # traversal and absolute paths are refused before anything runs
    for bad in ("..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "notes%2F..%2F..%2Fetc%2Fpasswd"):
        for method in ("GET", "PUT", "DELETE"):
            resp = await client.request(method, files_url(ws_id, bad), json={"content": "x"})
            assert (resp.status_code, resp.json()) == (400, {"error": "invalid path"}), (method, bad)
    resp = await client.get(files_url(ws_id), params={"path": "../etc"})
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid path"})
    resp = await client.get(files_url(ws_id, "config.yaml"), params={"root": "/etc"})
    assert resp.json() == {"error": "root must be one of: /configs, /workspace, /home, /plugins"}

    # delete (the reference refused every DELETE with 400): file, then a directory tree; idempotent
    resp = await client.delete(files_url(ws_id, "notes/today.md"))
    assert resp.content == b'{"path":"notes/today.md","status":"deleted"}'
    assert (await client.get(files_url(ws_id, "notes/today.md"))).status_code == 404
    await client.put(files_url(ws_id, "tree/a/b.md"), json={"content": "b"})
    assert (await client.delete(files_url(ws_id, "tree"))).status_code == 200
    listing = (await client.get(files_url(ws_id), params={"depth": "3"})).json()
    assert not any(e["path"].startswith("tree") for e in listing)
    assert (await client.delete(files_url(ws_id, "never-existed.md"))).status_code == 200
    assert (await client.get(files_url(ws_id, "config.yaml"))).json()["content"] == CONFIG_YAML.decode()

    # bulk replace writes every file into the running instance
    resp = await client.put(files_url(ws_id), json={"files": {"ctx/a.md": "shared A", "b.md": "B"}})
    assert resp.json() == {"files": 2, "source": "container", "status": "replaced", "workspace": ws_id}
    assert (await client.get(files_url(ws_id, "b.md"))).json()["content"] == "B"

    # shared context: valid entries that exist; traversal and missing entries are skipped
    resp = await client.get(f"/workspaces/{ws_id}/shared-context")
    assert (resp.status_code, resp.json()) == (200, [{"path": "ctx/a.md", "content": "shared A"}])
