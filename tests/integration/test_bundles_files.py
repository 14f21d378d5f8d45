"""Config-dir file confinement (workspaces/files.py), on a real filesystem with planted symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workspace_server.config import Settings
from workspace_server.workspaces import files


def test_write_tree_writes_nested_files(tmp_path: Path) -> None:
    root = tmp_path / "cfg"
    files.write_tree(root, {"a.md": b"A", "skills/x/deep/b.txt": b"B" * 100_000})
    assert (root / "a.md").read_bytes() == b"A"
    assert (root / "skills/x/deep/b.txt").read_bytes() == b"B" * 100_000
    assert files.read_tree(root) == {"a.md": b"A", "skills/x/deep/b.txt": b"B" * 100_000}


@pytest.mark.parametrize("rel", ["../x", "/etc/x", "a/../../x", "a//b", "", ".", "a/./b", "a\\b", "a\x00b"])
def test_write_tree_rejects_unsafe_paths(tmp_path: Path, rel: str) -> None:
    root = tmp_path / "cfg"
    with pytest.raises(files.UnsafePath):
        files.write_tree(root, {rel: b"x"})
    assert not root.exists()  # checked before anything is created


def test_write_tree_does_not_follow_planted_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "cfg", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "skills")  # a symlinked directory
    os.symlink(outside / "victim.txt", root / "system-prompt.md")  # a dangling symlinked file
    with pytest.raises(files.UnsafePath):
        files.write_tree(root, {"skills/x/a.md": b"x"})
    with pytest.raises(files.UnsafePath):  # bad input, not an OS error (issue 11 §3: 400, never a 500)
        files.write_tree(root, {"system-prompt.md": b"x"})
    assert list(outside.iterdir()) == []


def test_read_skips_symlinks_fifos_and_oversized(tmp_path: Path) -> None:
    root = tmp_path / "cfg"
    (root / "d").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("s")
    os.symlink(secret, root / "link")
    os.symlink(tmp_path, root / "d" / "up")
    os.mkfifo(root / "fifo")
    (root / "big").write_bytes(b"x" * 11)
    (root / "d" / "ok").write_bytes(b"ok")
    assert files.read_tree(root, max_bytes=10) == {"d/ok": b"ok"}
    assert files.read_file(root, "link") is None
    assert files.read_file(root, "fifo") is None
    assert files.read_file(root, "big", max_bytes=10) is None
    assert files.read_file(root, "d/up/secret") is None
    assert files.read_file(root, "../secret") is None
    assert files.read_file(root, "d/ok") == b"ok"
    assert files.subdirs(root) == ["d"]


def test_check_tree_rejects_file_dir_clash() -> None:
    with pytest.raises(files.UnsafePath):
        files.check_tree(["skills/a", "skills/a/b.md"])
    files.check_tree(["skills/a/x.md", "skills/a/b.md", "skills/ab"])


def test_workspace_config_dir_needs_a_uuid(tmp_path: Path) -> None:
    s = Settings(DATA_DIR=tmp_path)
    ws = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert files.workspace_config_dir(s, ws.upper()) == tmp_path.resolve() / "workspaces" / ws / "configs"
    for bad in ("../../etc", "ws-1", ""):
        with pytest.raises(files.UnsafePath):
            files.workspace_config_dir(s, bad)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("---\nname: x\ndescription: hidden\n---\n# Title\n\nFirst real line\nsecond\n", "First real line"),
        ("# Only headings\n## more\n", ""),
        ("plain first\n", "plain first"),
        ("---\nunterminated front matter\n", ""),
        ("", ""),
    ],
)
def test_skill_description(content: str, expected: str) -> None:
    from workspace_server.bundles.service import skill_description

    assert skill_description(content) == expected


@pytest.mark.parametrize(
    ("config", "runtime"),
    [
        (None, "langgraph"),
        ("name: a\n", "langgraph"),
        ("name: a\nruntime: hermes\n", "hermes"),
        ("runtime_config:\n  timeout: 1\nruntime: codex\n", "codex"),
        ("nested:\n  runtime: crewai\n", "langgraph"),
        (": : not yaml [\nruntime: autogen\n", "autogen"),
    ],
)
def test_bundle_runtime(config: str | None, runtime: str) -> None:
    from workspace_server.bundles.schemas import Bundle
    from workspace_server.bundles.service import bundle_runtime

    prompts = {} if config is None else {"config.yaml": config}
    assert bundle_runtime(Bundle(name="n", prompts=prompts)) == runtime
