"""Plugins end to end (spec 06 §3.1–§3.3): the registry listing, sources, the install error ladder, the
org allowlist gate, download, a github:// source served from a local bare repository, and install /
list / uninstall into a running workspace on the process backend."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.integration.orchestrator_support import (
    Platform,
    PlatformFactory,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from tests.integration.registry_support import add_workspace, bearer, ctx_of, mint_token
from workspace_server.common.ids import new_id

ADMIN = "plugins-admin"
AUTH = bearer(ADMIN)
PLUGIN_YAML = b"version: 1.2.0\ndescription: Helps\nauthor: acme\ntags: [a, b]\nskills: [helper]\n"


def make_plugin(root: Path, name: str, yaml_text: bytes = PLUGIN_YAML, **extra: bytes) -> Path:
    d = root / name
    (d / "skills" / "helper").mkdir(parents=True)
    (d / "plugin.yaml").write_bytes(yaml_text)
    (d / "skills" / "helper" / "SKILL.md").write_bytes(b"# Helper\n")
    (d / "rules.md").write_bytes(b"# Plugin: " + name.encode() + b" / rules\nbe nice\n")
    for rel, data in extra.items():
        (d / rel).write_bytes(data)
    return d


def plugins_dir(tmp_path: Path) -> Path:
    """The default discovery location (`<CONFIGS_DIR>/../plugins`) of the test settings."""
    root = tmp_path / "plugins"
    root.mkdir(exist_ok=True)
    make_plugin(root, "alpha")
    make_plugin(root, "beta", b"runtimes: [claude-code]\n")
    make_plugin(root, "gamma", b"")
    (root / "gamma" / "plugin.yaml").unlink()
    (root / "evil").mkdir()
    (root / "evil" / "plugin.yaml").write_bytes(b"name: evil\n")
    (root / "evil" / "passwd").symlink_to("/etc/passwd")
    files = {"plugin.yaml": b"x: 1\n"}
    digest = hashlib.sha256(b"plugin.yaml\0x: 1\n").hexdigest()
    for name, sha in (("pinned", digest), ("tampered", "0" * 64)):
        (root / name).mkdir()
        (root / name / "plugin.yaml").write_bytes(files["plugin.yaml"])
        (root / name / "manifest.json").write_text(json.dumps({"sha256": sha}))
    (root / "big").mkdir()
    (root / "big" / "blob.bin").write_bytes(b"x" * 5000)
    return root


async def install(c: httpx.AsyncClient, ws: str, body: Any, **kw: Any) -> httpx.Response:
    return await c.post(f"/workspaces/{ws}/plugins", json=body, **kw)


async def test_registry_sources_and_install_ladder(client_factory: ClientFactory, tmp_path: Path) -> None:
    plugins_dir(tmp_path)
    c = await client_factory(ADMIN_TOKEN=ADMIN, PLUGIN_INSTALL_MAX_DIR_BYTES="4096")
    ctx = ctx_of(c)
    r = await c.get("/plugins")
    assert r.status_code == 200
    names = [i["name"] for i in r.json()]
    assert names == ["alpha", "beta", "big", "evil", "gamma", "pinned", "tampered"]
    alpha = r.json()[0]
    assert alpha == {
        "name": "alpha",
        "version": "1.2.0",
        "description": "Helps",
        "author": "acme",
        "tags": ["a", "b"],
        "skills": ["helper"],
        "runtimes": None,
    }
    gamma = next(i for i in r.json() if i["name"] == "gamma")
    assert gamma["tags"] is None and gamma["version"] == ""
    r = await c.get("/plugins", params={"runtime": "langgraph"})
    assert "beta" not in [i["name"] for i in r.json()]
    r = await c.get("/plugins", params={"runtime": "claude_code"})
    assert "beta" in [i["name"] for i in r.json()]
    r = await c.get("/plugins/sources")
    assert r.json() == {"schemes": ["github", "local"]}

    ws = await add_workspace(ctx, "Plugged", status="online", runtime="claude-code")
    r = await c.get(f"/workspaces/{ws}/plugins/available", headers=AUTH)
    assert "beta" in [i["name"] for i in r.json()]
    # no backend here: nothing installed, compatibility trivially true
    assert (await c.get(f"/workspaces/{ws}/plugins", headers=AUTH)).json() == []
    r = await c.get(f"/workspaces/{ws}/plugins/compatibility", headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"error": "runtime query parameter is required"})
    r = await c.get(f"/workspaces/{ws}/plugins/compatibility", params={"runtime": "x"}, headers=AUTH)
    assert r.json() == {"target_runtime": "x", "compatible": [], "incompatible": [], "all_compatible": True}

    cases: list[tuple[Any, int, dict[str, Any]]] = [
        ({"source": "x" * 70000}, 400, {"error": "invalid request body"}),
        ([1], 400, {"error": "invalid request body"}),
        ({}, 400, {"error": "source is required"}),
        ({"source": "local://"}, 400, {"error": "invalid plugin source"}),
        (
            {"source": "ftp://x"},
            400,
            {"error": "failed to resolve plugin source", "available_schemes": ["github", "local"]},
        ),
        ({"source": "local://../etc"}, 400, {"error": "invalid plugin name"}),
        ({"source": "Bad Name"}, 400, {"error": "invalid plugin name"}),
        ({"source": "github://a/b;rm"}, 400, {"error": "invalid plugin source"}),
        ({"source": "nope"}, 404, {"error": "failed to fetch plugin from local", "source": "local://nope"}),
        ({"source": "tampered"}, 422, {"error": "plugin manifest integrity check failed"}),
        ({"source": "big"}, 413, {"error": "staged plugin exceeds size limit"}),
        ({"source": "alpha", "sha256": "ab" * 32}, 422, {}),
        ({"source": "gamma", "sha256": "ab" * 32}, 422, {}),
        ({"source": "alpha"}, 503, {"error": "workspace container not running"}),
        ({"source": "pinned"}, 503, {"error": "workspace container not running"}),
    ]
    for body, status, want in cases:
        r = await install(c, ws, body, headers=AUTH)
        assert r.status_code == status, (body, r.text)
        if want:
            assert r.json() == want, body
    r = await install(c, ws, {"source": "github://acme/tool"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["source"] == "github://acme/tool"
    assert r.json()["error"].startswith("unpinned github source: ")
    sha = hashlib.sha256(PLUGIN_YAML).hexdigest()
    r = await install(c, ws, {"source": "alpha", "sha256": "ab" * 32}, headers=AUTH)
    assert r.json() == {"error": f"sha256 mismatch: expected {'ab' * 32}, got {sha}"}
    r = await install(c, ws, {"source": "alpha", "sha256": sha.upper()}, headers=AUTH)
    assert r.status_code == 503  # the pin matched; only the missing instance stops it

    # auth: WorkspaceAuth on ~/plugins, AdminAuth on the allowlist, /plugins open
    assert (await install(c, ws, {"source": "alpha"})).status_code == 401
    assert (await c.get(f"/workspaces/{ws}/plugins")).status_code == 401
    assert (await c.delete(f"/workspaces/{ws}/plugins/alpha")).status_code == 401
    assert (await c.get(f"/orgs/{ws}/plugins/allowlist")).status_code == 401
    assert (await c.put(f"/orgs/{ws}/plugins/allowlist", json={})).status_code == 401

    # the staging dirs are gone
    assert not list(Path(tempfile_dir()).glob("molecule-plugin-fetch-*"))


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


async def test_allowlist_and_install_gate(client_factory: ClientFactory, tmp_path: Path) -> None:
    plugins_dir(tmp_path)
    c = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(c)
    org = await add_workspace(ctx, "Org", status="online")
    child = await add_workspace(ctx, "Child", status="online", parent_id=org)
    grandchild = await add_workspace(ctx, "Grand", status="online", parent_id=child)
    url = f"/orgs/{org}/plugins/allowlist"
    r = await c.get(url, headers=AUTH)
    assert r.json() == {"org_id": org, "plugins": [], "allow_all": True}
    assert (await c.get(f"/orgs/{new_id()}/plugins/allowlist", headers=AUTH)).json() == {
        "error": "org not found"
    }
    assert (await c.get("/orgs/nope/plugins/allowlist", headers=AUTH)).status_code == 404
    r = await c.put(url, content=b"{", headers=AUTH)
    assert r.status_code == 400
    r = await c.put(url, json={"plugins": ["alpha"]}, headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"error": "enabled_by is required"})
    r = await c.put(url, json={"plugins": ["../x"], "enabled_by": "me"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["plugin_name"] == "../x"
    r = await c.put(
        f"/orgs/{new_id()}/plugins/allowlist", json={"plugins": [], "enabled_by": "me"}, headers=AUTH
    )
    assert r.status_code == 404
    r = await c.put(url, json={"plugins": ["beta", "alpha", "alpha"], "enabled_by": "ops"}, headers=AUTH)
    assert r.json() == {"org_id": org, "plugins": ["beta", "alpha", "alpha"], "allow_all": False}
    r = await c.get(url, headers=AUTH)
    body = r.json()
    assert [p["plugin_name"] for p in body["plugins"]] == ["alpha", "beta"]
    assert body["plugins"][0]["enabled_by"] == "ops" and body["plugins"][0]["enabled_at"].endswith("Z")
    assert body["allow_all"] is False

    # the gate: org itself and its direct child are governed; the grandchild follows its parent (none)
    for ws in (org, child):
        r = await install(c, ws, {"source": "pinned"}, headers=AUTH)
        assert (r.status_code, r.json()) == (403, {"error": 'plugin "pinned" is not in the org allowlist'})
        assert (await install(c, ws, {"source": "alpha"}, headers=AUTH)).status_code == 503
    assert (await install(c, grandchild, {"source": "pinned"}, headers=AUTH)).status_code == 503
    assert (await install(c, new_id(), {"source": "pinned"}, headers=AUTH)).status_code == 503

    r = await c.put(url, json={"plugins": [], "enabled_by": "ops"}, headers=AUTH)
    assert r.json() == {"org_id": org, "plugins": [], "allow_all": True}
    assert (await install(c, child, {"source": "pinned"}, headers=AUTH)).status_code == 503


async def test_download(client_factory: ClientFactory, tmp_path: Path) -> None:
    plugins_dir(tmp_path)
    c = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(c)
    ws = await add_workspace(ctx, "Dl", status="online")
    token = await mint_token(ctx, ws)
    for name, headers in (("alpha", bearer(token)), ("evil", AUTH)):
        r = await c.get(f"/workspaces/{ws}/plugins/{name}/download", headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/gzip"
        assert r.headers["content-disposition"] == f'attachment; filename="{name}.tar.gz"'
        assert r.headers["x-plugin-name"] == name and r.headers["x-plugin-source"] == f"local://{name}"
        assert int(r.headers["content-length"]) == len(r.content)
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            members = tar.getmembers()
            assert all(m.isfile() and not m.name.startswith("/") and ".." not in m.name for m in members)
            got = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
        if name == "alpha":
            assert sorted(got) == ["plugin.yaml", "rules.md", "skills/helper/SKILL.md"]
            assert got["plugin.yaml"] == PLUGIN_YAML
        else:
            assert sorted(got) == ["plugin.yaml"]  # the symlink to /etc/passwd is not packed
    r = await c.get(
        f"/workspaces/{ws}/plugins/alpha/download", params={"source": "local://beta"}, headers=AUTH
    )
    assert r.json() == {"error": "plugin name mismatch", "resolved_name": "beta", "requested_name": "alpha"}
    r = await c.get(f"/workspaces/{ws}/plugins/..x/download", headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid plugin name"})
    r = await c.get(f"/workspaces/{ws}/plugins/nope/download", headers=AUTH)
    assert r.status_code == 404
    assert (await c.get(f"/workspaces/{ws}/plugins/alpha/download")).status_code == 401

    # dev mode lets WorkspaceAuth through without a bearer; the download re-check still wants the token
    dev = await client_factory(MOLECULE_ENV="development")
    r = await dev.get(f"/workspaces/{ws}/plugins/alpha/download")
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    other = await add_workspace(ctx_of(dev), "No token yet", status="online")
    assert (await dev.get(f"/workspaces/{other}/plugins/alpha/download")).status_code == 200
    slow = await client_factory(MOLECULE_ENV="development", PLUGIN_INSTALL_FETCH_TIMEOUT="1ns")
    r = await slow.get(f"/workspaces/{other}/plugins/alpha/download")
    assert (r.status_code, r.json()["error"]) == (504, "failed to fetch plugin from local")


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def github_base(tmp_path: Path) -> str:
    """`<base>/acme/tool.git`: a bare repository with a plugin on `main` and tag `v1`."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    base = tmp_path / "gh"
    bare = base / "acme" / "tool.git"
    git("init", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    make_plugin(tmp_path, "work")
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    git("init", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git(*ident, "commit", "-m", "plugin", cwd=work)
    git("tag", "v1", cwd=work)
    git("push", str(bare), "main", "v1", cwd=work)
    return f"file://{base}"


async def test_github_source(client_factory: ClientFactory, tmp_path: Path, github_base: str) -> None:
    c = await client_factory(ADMIN_TOKEN=ADMIN, PLUGIN_GITHUB_BASE_URL=github_base)
    ws = await add_workspace(ctx_of(c), "Gh", status="online")
    dl = f"/workspaces/{ws}/plugins/tool/download"
    r = await c.get(dl, params={"source": "github://acme/tool#v1"}, headers=AUTH)
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["plugin.yaml", "rules.md", "skills/helper/SKILL.md"]  # no .git
    assert r.headers["x-plugin-source"] == "github://acme/tool#v1"
    r = await install(c, ws, {"source": "github://acme/tool#v1"}, headers=AUTH)
    assert r.status_code == 503  # fetched and checked; no instance to install into
    r = await install(c, ws, {"source": "github://acme/tool#v9"}, headers=AUTH)
    assert (r.status_code, r.json()) == (
        404,
        {"error": "failed to fetch plugin from github", "source": "github://acme/tool#v9"},
    )
    r = await install(c, ws, {"source": "github://acme/missing#v1"}, headers=AUTH)
    assert r.status_code == 502 and "file://" not in r.text  # git's own text never reaches the client
    unpinned = await client_factory(
        ADMIN_TOKEN=ADMIN, PLUGIN_GITHUB_BASE_URL=github_base, PLUGIN_ALLOW_UNPINNED="true"
    )
    r = await unpinned.get(dl, params={"source": "github://acme/tool"}, headers=AUTH)
    assert r.status_code == 200, r.text


async def test_install_list_uninstall_on_process_backend(
    platform_factory: PlatformFactory, tmp_path: Path
) -> None:
    plugins_dir(tmp_path)
    p: Platform = await platform_factory("process")
    wid = await p.create("Plugin Host")
    await p.wait_status(wid, "online")
    restarts: list[str] = []

    async def record(ws_id: str) -> None:
        restarts.append(ws_id)

    p.ctx.restart_hook = record  # observe the hook instead of restarting the agent
    config = Path(p.settings.DATA_DIR).resolve() / "workspaces" / wid / "configs"
    (config / "CLAUDE.md").write_text("top\n# Plugin: alpha / rules\nbe nice\n\n\nkept\n")
    (config / "skills" / "helper").mkdir(parents=True)
    (config / "skills" / "helper" / "SKILL.md").write_text("x")

    r = await p.http.post(f"/workspaces/{wid}/plugins", json={"source": "alpha"})
    assert (r.status_code, r.json()) == (
        200,
        {"status": "installed", "plugin": "alpha", "source": "local://alpha"},
    )
    assert (config / "plugins" / "alpha" / "plugin.yaml").read_bytes() == PLUGIN_YAML
    assert (config / "plugins" / "alpha" / "skills" / "helper" / "SKILL.md").is_file()
    await p.wait_for(lambda: _done(restarts == [wid]), "the restart after install")
    r = await p.http.post(f"/workspaces/{wid}/plugins", json={"source": "evil"})
    assert r.status_code == 200
    assert not (config / "plugins" / "evil" / "passwd").exists()

    r = await p.http.get(f"/workspaces/{wid}/plugins")
    items = {i["name"]: i for i in r.json()}
    assert sorted(items) == ["alpha", "evil"]
    assert items["alpha"]["supported_on_runtime"] is True and items["alpha"]["skills"] == ["helper"]
    r = await p.http.get(f"/workspaces/{wid}/plugins/compatibility", params={"runtime": "claude-code"})
    assert r.json()["all_compatible"] is True and len(r.json()["compatible"]) == 2

    r = await p.http.delete(f"/workspaces/{wid}/plugins/alpha")
    assert r.json() == {"status": "uninstalled", "plugin": "alpha"}
    assert not (config / "plugins" / "alpha").exists()
    assert not (config / "skills" / "helper").exists()
    assert (config / "CLAUDE.md").read_text() == "top\nkept\n"
    await p.wait_for(lambda: _done(len(restarts) == 3), "the restart after uninstall")
    assert [i["name"] for i in (await p.http.get(f"/workspaces/{wid}/plugins")).json()] == ["evil"]
    r = await p.http.delete(f"/workspaces/{wid}/plugins/a..b")
    assert (r.status_code, r.json()) == (400, {"error": "invalid plugin name"})
    r = await p.http.delete(f"/workspaces/{new_id()}/plugins/alpha")
    assert (r.status_code, r.json()) == (503, {"error": "workspace container not running"})
    assert (await p.http.get(f"/workspaces/{new_id()}/plugins")).json() == []


async def _done(value: bool) -> bool:
    await asyncio.sleep(0)
    return value
