"""Org node config pieces (orgs/node_config.py, provisioner/config_source.append_yaml): merges, and YAML
blocks that no prompt text can break out of."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from workspace_server.orgs.models import Defaults, Node
from workspace_server.orgs.node_config import (
    NOT_MERGEABLE,
    _Builder,
    _literal,
    merged_plugins,
    merged_routing,
    routing_block,
)
from workspace_server.provisioner.config_source import append_yaml


def test_merges() -> None:
    assert merged_plugins(["a", "b", "a"], ["c", "!b", "-x", ""]) == ["a", "c"]
    assert merged_routing({"x": ["A"], "y": ["B"]}, {"y": [], "a": ["C"]}) == {"a": ["C"], "x": ["A"]}


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "  two\n\n  lines  \n",
        "key: value\n- list",
        "tab\there",
        "break\u2028out: 1",
        "nel\x85out: 1",
        "quote \" and ' and \\",
        "#!not a comment",
        "ctrl \x07 char",
    ],
)
def test_prompt_blocks_read_back_exactly(text: str) -> None:
    want = "\n".join(line.rstrip(" \t") for line in text.strip().split("\n")) + "\n"
    block = _literal("initial_prompt", text)
    assert yaml.safe_load(block) == {"initial_prompt": want}
    merged = append_yaml(b"name: x\nruntime: echo", block)
    assert merged is not None
    assert yaml.safe_load(merged) == {"name": "x", "runtime": "echo", "initial_prompt": want}


def test_routing_block_quotes_everything() -> None:
    block = routing_block({"a: b": ["x\ny", "[z]"]})
    assert yaml.safe_load(block) == {"category_routing": {"a: b": ["x\ny", "[z]"]}}


def test_append_refuses_a_base_it_would_corrupt() -> None:
    assert append_yaml(b"{name: x}", "a: 1\n") is None  # flow mapping
    assert append_yaml(b"- a\n", "a: 1\n") is None  # not a mapping
    assert append_yaml(b"name: [unclosed\n", "a: 1\n") is None
    assert append_yaml(b"a: 0\n", "a: 1\n") == b"a: 0\na: 1\n"  # the appended key wins


def test_blocks_not_appendable_to_a_files_dir_config_are_reported(tmp_path: Path) -> None:
    node_dir = tmp_path / "lead"
    node_dir.mkdir()
    (node_dir / "config.yaml").write_text("{name: flow-style}\n")
    node = Node(name="Lead", files_dir="lead", initial_prompt="go", idle_prompt="look")
    ctx: Any = SimpleNamespace(settings=SimpleNamespace(plugin_max_dir_bytes=1 << 20))
    b = _Builder(
        ctx,
        node,
        Defaults(),
        tmp_path,
        node_dir,
    )
    b.files_dir()
    b.config_blocks()
    assert b.blocks == [] and b.files["config.yaml"] == b"{name: flow-style}\n"
    assert [(s["key"], s["reason"]) for s in b.out.config_skipped] == [
        ("initial_prompt", NOT_MERGEABLE),
        ("idle_prompt", NOT_MERGEABLE),
    ]
