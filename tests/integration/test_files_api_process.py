"""The files API on the process backend (host dirs), offline fallbacks, and with no backend at all."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.integration.files_api_support import (
    add_workspace,
    check_running_contract,
    ctx_of,
    files_url,
    install_backend,
    start_echo_agent,
)
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.provisioner.process import ProcessBackend
from workspace_server.workspaces.files import workspace_config_dir


@pytest.fixture
async def dev_client(client_factory: ClientFactory) -> httpx.AsyncClient:
    """No backend, dev mode (WorkspaceAuth passes without a token)."""
    return await client_factory(MOLECULE_ENV="development")


@pytest.fixture
async def env(client_factory: ClientFactory) -> AsyncIterator[tuple[httpx.AsyncClient, ProcessBackend]]:
    client = await client_factory(
        MOLECULE_ENV="development"
    )  # dev mode: WorkspaceAuth passes without a token
    backend = ProcessBackend(ctx_of(client).settings)
    started = install_backend(client, backend)
    yield client, backend
    for ws_id in started:
        await backend.stop(ws_id)
        await backend.remove_volumes(ws_id, workspace=True)


async def test_running_process_workspace_contract(env: tuple[httpx.AsyncClient, ProcessBackend]) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, "ignored")
    await check_running_contract(client, ws_id)
    # the files really are the agent's host config dir
    config_dir = workspace_config_dir(ctx_of(client).settings, ws_id)
    assert (config_dir / "b.md").read_text() == "B"


async def test_planted_symlinks_do_not_leak_host_files(
    env: tuple[httpx.AsyncClient, ProcessBackend], tmp_path: Path
) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, "ignored")
    secret = tmp_path / "host-secret"
    secret.write_text("do not read")
    config_dir = workspace_config_dir(ctx_of(client).settings, ws_id)
    os.symlink(secret, config_dir / "link.txt")
    os.symlink(tmp_path, config_dir / "linkdir")

    assert (await client.get(files_url(ws_id, "link.txt"))).status_code == 404
    assert (await client.get(files_url(ws_id, "linkdir/host-secret"))).status_code == 404
    assert (await client.get(files_url(ws_id), params={"path": "linkdir"})).json() == []
    # a write through a planted symlink (a directory or the file itself) is refused as a bad path: a 400
    # (issue 11 §3; it was a 500 "failed to write file"), the link target untouched
    resp = await client.put(files_url(ws_id, "linkdir/evil.txt"), json={"content": "x"})
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid path"})
    assert not (tmp_path / "evil.txt").exists()
    resp = await client.put(files_url(ws_id, "link.txt"), json={"content": "overwritten"})
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid path"})
    resp = await client.put(files_url(ws_id), json={"files": {"linkdir/evil.txt": "x"}})
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid path"})
    assert not (tmp_path / "evil.txt").exists()
    # a path too long for the file system is a bad path as well, not an OS error
    resp = await client.put(files_url(ws_id, "a" * 300), json={"content": "x"})
    assert resp.status_code == 400, resp.text
    assert (await client.delete(files_url(ws_id, "linkdir"))).status_code == 200
    assert secret.read_text() == "do not read"  # the link went, its target stayed


async def test_workspace_root_and_other_roots(env: tuple[httpx.AsyncClient, ProcessBackend]) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, "ignored")
    workdir = Path(ctx_of(client).settings.DATA_DIR).resolve() / "workspaces" / ws_id / "workspace"
    (workdir / "src").mkdir()
    (workdir / "src" / "main.py").write_text("print(1)\n")

    listing = (await client.get(files_url(ws_id), params={"root": "/workspace", "depth": "2"})).json()
    assert {"path": "src/main.py", "size": 9, "dir": False} in listing
    resp = await client.get(files_url(ws_id, "src/main.py"), params={"root": "/workspace"})
    assert resp.json() == {"content": "print(1)\n", "path": "src/main.py", "size": 9}
    assert (await client.get(files_url(ws_id), params={"root": "/home"})).json() == []


async def test_stopped_workspace_uses_its_config_dir(env: tuple[httpx.AsyncClient, ProcessBackend]) -> None:
    client, backend = env
    ws_id = await add_workspace(client)
    await start_echo_agent(backend, ws_id, "ignored")
    await backend.stop(ws_id)

    resp = await client.put(files_url(ws_id), json={"files": {"offline.md": "saved while stopped"}})
    assert resp.json()["source"] == "volume"
    assert (await client.get(files_url(ws_id, "offline.md"))).json()["content"] == "saved while stopped"
    assert (await client.delete(files_url(ws_id, "offline.md"))).status_code == 200
    assert (await client.get(files_url(ws_id, "offline.md"))).status_code == 404
    # /workspace has no offline stand-in
    assert (await client.get(files_url(ws_id), params={"root": "/workspace"})).json() == []


async def test_unprovisioned_workspace_reads_its_template(
    env: tuple[httpx.AsyncClient, ProcessBackend], tmp_path: Path
) -> None:
    client, _backend = env
    template = tmp_path / "configs" / "seo-agent"
    (template / "skills" / "s").mkdir(parents=True)
    (template / "config.yaml").write_text("name: SEO Agent\nshared_context: [guide.md]\n")
    (template / "guide.md").write_text("the guide")
    (template / "skills" / "s" / "SKILL.md").write_text("skill")
    ws_id = await add_workspace(client, name="SEO Agent")

    listing = (await client.get(files_url(ws_id), params={"depth": "3"})).json()
    assert [e["path"] for e in listing] == [
        "config.yaml",
        "guide.md",
        "skills",
        "skills/s",
        "skills/s/SKILL.md",
    ]
    resp = await client.get(files_url(ws_id, "guide.md"))
    assert resp.json() == {"content": "the guide", "path": "guide.md", "size": 9}
    resp = await client.get(files_url(ws_id, "nope.md"))
    assert (resp.status_code, resp.json()) == (404, {"error": "file not found"})
    resp = await client.get(f"/workspaces/{ws_id}/shared-context")
    assert resp.json() == [{"path": "guide.md", "content": "the guide"}]
    # the template stands in for /configs only
    resp = await client.get(files_url(ws_id, "guide.md"), params={"root": "/workspace"})
    assert resp.json() == {"error": "file not found (container offline, no template)"}

    other = await add_workspace(client, name="No Template Here")
    resp = await client.get(files_url(other, "config.yaml"))
    assert (resp.status_code, resp.json()) == (
        404,
        {"error": "file not found (container offline, no template)"},
    )
    assert (await client.get(files_url(other))).json() == []
    assert (await client.get(f"/workspaces/{other}/shared-context")).json() == []


async def test_without_backend_writes_fall_back_to_the_template(
    dev_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = dev_client
    template = tmp_path / "configs" / "writer"
    template.mkdir(parents=True)
    (template / "config.yaml").write_text("name: Writer\n")
    ws_id = await add_workspace(client, name="Writer")

    resp = await client.put(files_url(ws_id), json={"files": {"new.md": "into the template"}})
    assert resp.json() == {"files": 1, "source": "template", "status": "replaced", "workspace": ws_id}
    assert (template / "new.md").read_text() == "into the template"
    resp = await client.put(files_url(ws_id, "x.md"), json={"content": "x"})
    assert (resp.status_code, resp.json()) == (
        500,
        {"error": "failed to write file: no workspace backend available"},
    )
    nobody = await add_workspace(client, name="Nobody")
    resp = await client.put(files_url(nobody), json={"files": {"a.md": "a"}})
    assert (resp.status_code, resp.json()) == (500, {"error": "failed to write files to workspace"})


async def test_request_errors(dev_client: httpx.AsyncClient) -> None:
    client = dev_client
    ws_id = await add_workspace(client)
    unknown = "00000000-0000-4000-8000-000000000000"
    for url in (files_url(unknown), files_url(unknown, "a.md"), f"/workspaces/{unknown}/shared-context"):
        resp = await client.get(url)
        assert (resp.status_code, resp.json()) == (404, {"error": "workspace not found"}), url
    assert (await client.get(files_url("not-a-uuid", "a.md"))).status_code == 404
    resp = await client.get(files_url(ws_id), params={"depth": "9"})
    assert resp.json() == {"error": "depth must be 1-5"}
    for body in (b"not json", b'{"content": 5}'):
        resp = await client.put(files_url(ws_id, "a.md"), content=body)
        assert (resp.status_code, resp.json()) == (400, {"error": "invalid request body"})
    resp = await client.put(files_url(ws_id), json={"files": {f"{i}.md": "" for i in range(201)}})
    assert resp.json() == {"error": "too many files (201), max 200"}
    resp = await client.put(files_url(ws_id), json={"files": {"../x": ""}})
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid request body"})


async def test_files_api_requires_workspace_auth(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN="admin-secret")
    ws_id = await add_workspace(client)
    other = await add_workspace(client, name="Other")
    async with ctx_of(client).engine.begin() as conn:
        other_token = await issue_workspace_token(conn, other)
        own_token = await issue_workspace_token(conn, ws_id)
    resp = await client.get(files_url(ws_id))
    assert (resp.status_code, resp.json()) == (401, {"error": "missing workspace auth token"})
    resp = await client.put(
        files_url(ws_id, "a.md"), json={"content": "x"}, headers={"Authorization": f"Bearer {other_token}"}
    )
    assert (resp.status_code, resp.json()) == (401, {"error": "invalid workspace auth token"})
    resp = await client.get(files_url(ws_id), headers={"Authorization": f"Bearer {own_token}"})
    assert resp.status_code == 200
