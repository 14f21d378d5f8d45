"""Unit tests for the org template parts: `!include` loader, env collection, canvas grid, dotenv."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from workspace_server.orgs import envreq, layout
from workspace_server.orgs.models import too_large
from workspace_server.orgs.sources import expand_vars, parse_dotenv
from workspace_server.orgs.yaml_include import IncludeError, load_org_file


def test_include_replaces_the_node(tmp_path: Path) -> None:
    (tmp_path / "org.yaml").write_text("a: !include parts/x.yaml\nb: [1, !include parts/y.yaml]\n")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "x.yaml").write_text("k: !include y.yaml\n")
    (tmp_path / "parts" / "y.yaml").write_text("42\n")
    assert load_org_file(tmp_path / "org.yaml", tmp_path) == {"a": {"k": 42}, "b": [1, 42]}


def test_include_sibling_prefix_dir_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "foo"
    root.mkdir()
    (tmp_path / "foobar").mkdir()
    (tmp_path / "foobar" / "x.yaml").write_text("1\n")
    (root / "org.yaml").write_text("a: !include ../foobar/x.yaml\n")
    with pytest.raises(IncludeError):
        load_org_file(root / "org.yaml", root)


def test_include_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.yaml").write_text("1\n")
    (root / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    (root / "org.yaml").write_text("a: !include link.yaml\n")
    with pytest.raises(IncludeError):
        load_org_file(root / "org.yaml", root)


def test_no_python_tags(tmp_path: Path) -> None:
    (tmp_path / "org.yaml").write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(yaml.YAMLError):
        load_org_file(tmp_path / "org.yaml", tmp_path)


def test_alias_bomb_is_too_large() -> None:
    doc: dict[str, object] = {"workspaces": [{"name": "x"}]}
    level: list[object] = [{"name": "leaf"}]
    for _ in range(12):
        level = [{"name": "n", "children": level}] * 10
    doc["workspaces"] = level
    assert too_large(doc)


def test_env_collection() -> None:
    required = envreq.parse_list(["B_KEY", {"any_of": ["A_KEY", "B_KEY"]}, "lower", {"any_of": ["X", "Y"]}])
    recommended = envreq.parse_list(
        [{"any_of": ["Y", "X"]}, "B_KEY", {"any_of": ["B_KEY", "C_KEY"]}, "D_KEY", {"any_of": ["D_KEY", "E"]}]
    )
    req, rec = envreq.collect(required, recommended)
    assert envreq.to_json(req) == ["B_KEY", {"any_of": ["X", "Y"]}]
    # B_KEY entries gone (strict required); the D_KEY group is dominated by recommended D_KEY
    assert envreq.to_json(rec) == ["D_KEY", {"any_of": ["X", "Y"]}]
    assert envreq.missing(req, {"Y"}) == ["B_KEY"]
    with pytest.raises(envreq.EnvSpecError):
        envreq.parse_list([{"any_of": []}])
    assert envreq.parse_list([{"any_of": ["bad name"]}]) == []


def test_layout_grid() -> None:
    leaf = {"name": "l"}
    parent = {"children": [leaf, leaf, leaf]}
    assert layout.subtree_size(leaf) == (240, 130)
    assert layout.subtree_size(parent) == (16 * 2 + 240 * 2 + 14, 130 + 130 * 2 + 14 + 16)
    slots = layout.child_slots([(240, 130), (500, 300), (240, 130)])
    assert slots == [(16, 130), (16 + 500 + 14, 130), (16, 130 + 300 + 14)]


def test_dotenv_and_expansion() -> None:
    text = '\ufeffexport A=1\r\nB="x # y"\nC=v # comment\nD=   # c\nE=\n# skip\nbad key=1\nF=a#b\n'
    assert parse_dotenv(text) == {"A": "1", "B": "x # y", "C": "v", "F": "a#b"}
    assert parse_dotenv("T=${HOME}\nU=$PATH\n") == {"T": "${HOME}", "U": "$PATH"}  # never interpolated
    assert expand_vars("${A}/$B/${NONE}x", {"A": "1"}, {"B": "2", "A": "no"}) == "1/2/x"
