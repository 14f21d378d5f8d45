"""Host-directory helpers behind the process backend's files API and the template fallback: confined
to their root even when the workspace plants symlinks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from workspace_server.workspaces.files import (
    FileTooLarge,
    UnsafePath,
    list_tree,
    read_regular,
    remove_path,
    write_tree,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "skills" / "x").mkdir(parents=True)
    (root / "config.yaml").write_text("name: t\n")
    (root / "skills" / "x" / "SKILL.md").write_text("12345")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / "node_modules").mkdir()
    (root / ".DS_Store").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("top secret")
    os.symlink(outside, root / "escape")
    os.symlink(outside / "secret", root / "secret-link")
    return root


def test_list_tree_depth_skips_and_symlinks(tree: Path) -> None:
    assert list_tree(tree, "", 1) == [
        ("config.yaml", 8, False),
        ("escape", os.lstat(tree / "escape").st_size, False),
        ("secret-link", os.lstat(tree / "secret-link").st_size, False),
        ("skills", os.stat(tree / "skills").st_size, True),
    ]
    deep = [p for p, _, _ in list_tree(tree, "", 5) or []]
    assert deep == ["config.yaml", "escape", "secret-link", "skills", "skills/x", "skills/x/SKILL.md"]
    assert list_tree(tree, "skills", 2) == [
        ("x", os.stat(tree / "skills" / "x").st_size, True),
        ("x/SKILL.md", 5, False),
    ]
    assert list_tree(tree, "escape", 3) == []  # a symlinked directory is never entered
    assert list_tree(tree, "missing", 1) == []
    assert list_tree(tree / "nope", "", 1) is None


def test_read_regular_refuses_symlinks_and_caps(tree: Path) -> None:
    assert read_regular(tree, "skills/x/SKILL.md") == b"12345"
    assert read_regular(tree, "secret-link") is None
    assert read_regular(tree, "escape/secret") is None
    assert read_regular(tree, "skills") is None
    assert read_regular(tree, "missing") is None
    os.mkfifo(tree / "fifo")
    assert read_regular(tree, "fifo") is None  # opened non-blocking, then refused: never hangs
    with pytest.raises(FileTooLarge):
        read_regular(tree, "config.yaml", max_bytes=3)


def test_remove_path_never_follows_symlinks(tree: Path, tmp_path: Path) -> None:
    assert remove_path(tree, "escape") is True  # removes the link itself
    assert (tmp_path / "outside" / "secret").read_text() == "top secret"
    assert remove_path(tree, "secret-link/x") is False
    assert remove_path(tree, "skills") is True
    assert not (tree / "skills").exists()
    assert remove_path(tree, "missing") is False
    with pytest.raises(UnsafePath):
        remove_path(tree, "../outside")


def test_write_tree_mode(tmp_path: Path) -> None:
    write_tree(tmp_path / "t", {"a/b.md": b"x", "c": b"y"}, mode=0o600)
    assert stat.S_IMODE(os.stat(tmp_path / "t" / "a" / "b.md").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "t" / "c").st_mode) == 0o600
