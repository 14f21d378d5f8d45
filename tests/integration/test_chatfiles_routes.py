"""Chat uploads and downloads on the host-directory storage (process backend / no backend), spec 04 §4."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.chatfiles.service import content_disposition, sanitize_filename
from workspace_server.common.ids import new_id
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
AH = {"Authorization": f"Bearer {ADMIN}"}
MiB = 1024 * 1024
STORED = re.compile(r"^workspace:/workspace/\.molecule/chat-uploads/([0-9a-f]{32})-(.+)$")


async def _ws(ctx: Any, status: str = "online", **cols: Any) -> tuple[str, dict[str, str]]:
    ws_id = new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name="ws", status=status, **cols)
        token = await issue_workspace_token(conn, ws_id)
    return ws_id, {"Authorization": f"Bearer {token}"}


def _root(data_dir: Path, ws_id: str) -> Path:
    return data_dir.resolve() / "workspaces" / ws_id


async def _upload(client: httpx.AsyncClient, ws: str, h: dict[str, str], files: list[Any]) -> httpx.Response:
    return await client.post(f"/workspaces/{ws}/chat/uploads", files=files, headers=h)


async def test_upload_then_download_round_trip(client_factory: Any, tmp_path: Path) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, MAX_BODY_BYTES=64 * MiB)
    ws, h = await _ws(client.app.state.ctx)
    binary = bytes(range(256)) * 10
    r = await _upload(
        client,
        ws,
        h,
        [
            ("files", ("../../etc/my report (final).pdf", binary, "application/pdf")),
            ("files", ("notes.txt", b"hello", "text/plain")),
        ],
    )
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    assert [list(f) for f in files] == [["uri", "name", "mimeType", "size"]] * 2
    assert [(f["name"], f["mimeType"], f["size"]) for f in files] == [
        ("my_report__final_.pdf", "application/pdf", len(binary)),
        ("notes.txt", "text/plain", 5),
    ]
    m = STORED.match(files[0]["uri"])
    assert m and m.group(2) == "my_report__final_.pdf"
    on_disk = (
        _root(tmp_path / "data", ws)
        / "workspace"
        / ".molecule"
        / "chat-uploads"
        / f"{m.group(1)}-{m.group(2)}"
    )
    assert on_disk.read_bytes() == binary

    path = files[0]["uri"].removeprefix("workspace:")
    r = await client.get(f"/workspaces/{ws}/chat/download", params={"path": path}, headers=h)
    assert r.status_code == 200
    assert r.content == binary
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-length"] == str(len(binary))
    name = path.rsplit("/", 1)[1]
    assert r.headers["content-disposition"] == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"

    # /configs maps to the workspace's config directory
    configs = _root(tmp_path / "data", ws) / "configs"
    configs.mkdir(parents=True)
    (configs / "config.yaml").write_text("name: ws\n")
    r = await client.get(
        f"/workspaces/{ws}/chat/download", params={"path": "/configs/config.yaml"}, headers=h
    )
    assert (r.status_code, r.content) == (200, b"name: ws\n")


async def test_download_path_rules(client_factory: Any, tmp_path: Path) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client.app.state.ctx)
    root = _root(tmp_path / "data", ws)
    (root / "workspace" / "dir").mkdir(parents=True)
    (root / "workspace" / "dir" / "f.txt").write_text("ok")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    os.symlink(secret, root / "workspace" / "link.txt")
    os.symlink(tmp_path, root / "workspace" / "escape")
    os.mkfifo(root / "workspace" / "pipe")

    cases = [
        ("", 400, "path query required"),
        ("workspace/dir/f.txt", 400, "path must be absolute"),
        ("/etc/passwd", 400, "path must be under /configs, /workspace, /home, or /plugins"),
        ("/workspacex/f", 400, "path must be under /configs, /workspace, /home, or /plugins"),
        ("/workspace/../etc/passwd", 400, "invalid path"),
        ("/workspace/dir/../dir/f.txt", 400, "invalid path"),
        ("/workspace//dir/f.txt", 400, "invalid path"),
        ("/workspace/dir/", 400, "invalid path"),
        ("/workspace/dir/./f.txt", 400, "invalid path"),
        ("/workspace/dir", 400, "path is not a regular file"),
        ("/workspace", 400, "path is not a regular file"),
        ("/workspace/link.txt", 400, "path is not a regular file"),
        ("/workspace/pipe", 400, "path is not a regular file"),
        ("/workspace/escape/secret.txt", 404, "file not found"),
        ("/workspace/missing.txt", 404, "file not found"),
        ("/home/agent/.bashrc", 404, "file not found"),
        ("/plugins/x", 404, "file not found"),
    ]
    for path, status, message in cases:
        r = await client.get(f"/workspaces/{ws}/chat/download", params={"path": path}, headers=h)
        assert (r.status_code, r.json()) == (status, {"error": message}), path
    r = await client.get(
        f"/workspaces/{ws}/chat/download", params={"path": "/workspace/dir/f.txt"}, headers=h
    )
    assert (r.status_code, r.content) == (200, b"ok")
    assert r.headers["content-type"].startswith("text/plain")
    (root / "workspace" / "naïve 😀.txt").write_bytes(b"emoji")
    r = await client.get(
        f"/workspaces/{ws}/chat/download", params={"path": "/workspace/naïve 😀.txt"}, headers=h
    )
    assert (r.status_code, r.content) == (200, b"emoji")
    raw_header = dict(r.headers.raw)[b"content-disposition"]
    assert raw_header.decode() == (
        "attachment; filename=\"naïve 😀.txt\"; filename*=UTF-8''na%C3%AFve%20%F0%9F%98%80.txt"
    )
    r = await client.get("/workspaces/not-a-uuid/chat/download", params={"path": "/workspace/x"}, headers=AH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"})


async def test_upload_refuses_symlinked_upload_dir(client_factory: Any, tmp_path: Path) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client.app.state.ctx)
    workspace = _root(tmp_path / "data", ws) / "workspace"
    workspace.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, workspace / ".molecule")  # planted by whatever runs in the workspace
    r = await _upload(client, ws, h, [("files", ("a.txt", b"x", "text/plain"))])
    # forbidden (issue 11 §3: it was a 500), the reference's message kept; nothing written outside
    assert (r.status_code, r.json()) == (403, {"error": "failed to stage files in workspace"})
    assert list(outside.iterdir()) == []


async def test_upload_validation(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, MAX_BODY_BYTES=64 * MiB)
    ctx = client.app.state.ctx
    ws, h = await _ws(ctx)

    r = await client.post(f"/workspaces/{ws}/chat/uploads", json={"files": []}, headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "failed to parse multipart form"})
    r = await _upload(client, ws, h, [("other", ("a.txt", b"x", "text/plain"))])
    assert (r.status_code, r.json()) == (400, {"error": "expected at least one 'files' field"})
    r = await client.post(
        f"/workspaces/{ws}/chat/uploads", data={"files": "not a file"}, files=[("x", ("a", b"1"))], headers=h
    )
    assert (r.status_code, r.json()) == (400, {"error": "expected at least one 'files' field"})

    r = await _upload(
        client, ws, h, [("files", ("big.bin", b"\0" * (25 * MiB + 1), "application/octet-stream"))]
    )
    assert (r.status_code, r.json()) == (413, {"error": "big.bin exceeds per-file limit (25 MB)"})
    r = await _upload(
        client, ws, h, [("files", ("exact.bin", b"\0" * (25 * MiB), "application/octet-stream"))]
    )
    assert r.status_code == 200 and r.json()["files"][0]["size"] == 25 * MiB
    three = [("files", (f"p{i}.bin", b"\1" * (20 * MiB), "application/octet-stream")) for i in range(3)]
    r = await _upload(client, ws, h, three)
    assert (r.status_code, r.json()) == (413, {"error": "upload exceeds total limit (50 MB)"})

    r = await _upload(client, new_id(), AH, [("files", ("a.txt", b"x", "text/plain"))])
    assert (r.status_code, r.json()) == (503, {"error": "workspace container not running"})
    removed, _ = await _ws(ctx, status="removed")
    r = await _upload(client, removed, AH, [("files", ("a.txt", b"x", "text/plain"))])
    assert (r.status_code, r.json()) == (503, {"error": "workspace container not running"})
    r = await client.post("/workspaces/nope/chat/uploads", files=[("files", ("a", b"x"))], headers=AH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"})


async def test_bound_workspace_dir(client_factory: Any, tmp_path: Path) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx
    bound = tmp_path / "project"
    bound.mkdir()
    rw, rwh = await _ws(ctx, workspace_dir=str(bound), workspace_access="read_write")
    r = await _upload(client, rw, rwh, [("files", ("a.txt", b"data", "text/plain"))])
    assert r.status_code == 200
    stored = r.json()["files"][0]["uri"].rsplit("/", 1)[1]
    assert (bound / ".molecule" / "chat-uploads" / stored).read_bytes() == b"data"

    ro, roh = await _ws(ctx, workspace_dir=str(bound), workspace_access="read_only")
    r = await _upload(client, ro, roh, [("files", ("a.txt", b"data", "text/plain"))])
    assert (r.status_code, r.json()) == (500, {"error": "failed to stage files in workspace"})
    r = await client.get(
        f"/workspaces/{ro}/chat/download",
        params={"path": f"/workspace/.molecule/chat-uploads/{stored}"},
        headers=roh,
    )
    assert (r.status_code, r.content) == (200, b"data")


async def test_chat_files_need_workspace_auth(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, _ = await _ws(client.app.state.ctx)
    _, other = await _ws(client.app.state.ctx)
    r = await client.get(f"/workspaces/{ws}/chat/download", params={"path": "/workspace/x"})
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await _upload(client, ws, other, [("files", ("a.txt", b"x", "text/plain"))])
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("report.pdf", "report.pdf"),
        ("my file.txt", "my_file.txt"),
        ("../../etc/passwd", "passwd"),
        ("dir/", "dir"),
        ("", "file"),
        ("/", "_"),
        ("..", "file"),
        ("a\\b.txt", "a_b.txt"),
        ("naïve😀.md", "na_ve_.md"),
        ("x" * 120 + ".tar.gz", "x" * 97 + ".gz"),
        ("y" * 90 + "." + "z" * 30, ("y" * 90 + "." + "z" * 30)[:100]),
    ],
)
def test_sanitize_filename(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_content_disposition_escapes() -> None:
    assert content_disposition('a"b\\c\r\nd é.txt') == (
        'attachment; filename="a\\"b\\\\cd é.txt"; filename*=UTF-8\'\'a%22b%5Cc%0D%0Ad%20%C3%A9.txt'
    )
