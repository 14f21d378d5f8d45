"""Pure rules of the files API, templates and terminal: names, paths, listings, generated config."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from workspace_server.common.errors import ApiError
from workspace_server.config import Settings
from workspace_server.files.service import (
    parse_content_body,
    parse_depth,
    parse_files_body,
    parse_rel,
    parse_root,
)
from workspace_server.provisioner.base import BackendError, FileEntry, split_workspace_path
from workspace_server.provisioner.docker import (
    GNU_FIND_PRINT,
    entries_from_archive,
    file_from_archive,
    find_argv,
    parse_find_listing,
    parse_stat_listing,
)
from workspace_server.templates.service import (
    confined_tree,
    generate_default_config,
    parse_import_body,
    template_summary,
)
from workspace_server.terminal.service import origin_allowed, parse_resize
from workspace_server.workspaces.templates import (
    clean_rel_path,
    find_template_by_name,
    normalize_name,
    validate_rel_path,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Agent v2.0", "agent-v20"),
        ("../hack", "hack"),
        ("SEO Agent", "seo-agent"),
        ("a_b-C", "a_b-c"),
        ("", "unnamed"),
        ("...", "unnamed"),
        ("/etc/passwd", "etcpasswd"),
        ("Ünïcode", "ncode"),
        (" lead", "-lead"),
    ],
)
def test_normalize_name(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


@pytest.mark.parametrize("rel", [".env", "foo/./bar", "C:\\x", "a/b/c.md", "a//b"])
def test_validate_rel_path_allows(rel: str) -> None:
    assert validate_rel_path(rel)


@pytest.mark.parametrize("rel", ["", ".", "/etc/passwd", "../x", "a/../b", "a..b", "x\x00y"])
def test_validate_rel_path_rejects(rel: str) -> None:
    assert not validate_rel_path(rel)


def test_clean_rel_path_normalises_and_refuses_the_root() -> None:
    assert clean_rel_path("foo/./bar") == "foo/bar"
    assert clean_rel_path("a//b/") == "a/b"
    assert clean_rel_path("./") is None
    assert clean_rel_path("../etc") is None


def test_request_parsing_messages() -> None:
    assert parse_root(None) == "/configs"
    assert parse_root("/workspace") == "/workspace"
    for bad in ("", "/etc", "/configs/", "/"):
        with pytest.raises(ApiError) as err:
            parse_root(bad)
        assert err.value.body == {"error": "root must be one of: /configs, /workspace, /home, /plugins"}
    assert parse_depth(None) == 1 and parse_depth("5") == 5 and parse_depth("+2") == 2
    for bad in ("0", "6", "x", " 3", "-1"):
        with pytest.raises(ApiError) as err:
            parse_depth(bad)
        assert err.value.body == {"error": "depth must be 1-5"}
    with pytest.raises(ApiError) as err:
        parse_rel("../../etc/passwd")
    assert (err.value.status, err.value.body) == (400, {"error": "invalid path"})
    assert parse_content_body(None) == "" and parse_content_body({"content": "x"}) == "x"
    with pytest.raises(ApiError):
        parse_content_body({"content": 1})
    assert parse_files_body({"files": {"a": "b", "c": None}}) == {"a": "b", "c": ""}
    bad_bodies: list[Any] = [{}, {"files": None}, {"files": []}, {"files": {"a": 1}}, []]
    for bad_body in bad_bodies:
        with pytest.raises(ApiError):
            parse_files_body(bad_body)


def test_split_workspace_path() -> None:
    assert split_workspace_path("/configs") == ("/configs", "")
    assert split_workspace_path("/workspace/a/b") == ("/workspace", "a/b")
    for bad in ("/etc/passwd", "/configs/../etc", "/configsx", "configs/a"):
        with pytest.raises(BackendError):
            split_workspace_path(bad)


def test_find_argv_is_plain_argv() -> None:
    argv = find_argv("/configs/sub dir", 2, GNU_FIND_PRINT)
    assert argv[:6] == ["find", "/configs/sub dir", "-mindepth", "1", "-maxdepth", "2"]
    assert "sh" not in argv and "-c" not in argv
    with pytest.raises(BackendError):
        find_argv("relative", 1, GNU_FIND_PRINT)


def test_parse_find_listing_walk_order_and_odd_names() -> None:
    out = b"f\t3\ta-b\0d\t4096\ta\0f\t7\ta/x\ty\0f\t1\tnew\nline\0garbage\0"
    assert parse_find_listing(out) == [
        FileEntry("a", 0, True),
        FileEntry("a/x\ty", 7, False),
        FileEntry("a-b", 3, False),
        FileEntry("new\nline", 1, False),
    ]


def test_parse_stat_listing() -> None:
    out = b"directory|4096|/configs/skills\nregular file|12|/configs/skills/a.md\nregular file|1|/etc/x\n"
    assert parse_stat_listing(out, "/configs") == [
        FileEntry("skills", 0, True),
        FileEntry("skills/a.md", 12, False),
    ]


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_entries_from_archive_depth_and_skips() -> None:
    data = _tar(
        [
            ("configs", None),
            ("configs/a.md", b"abc"),
            ("configs/.git", None),
            ("configs/.git/HEAD", b"x"),
            ("configs/skills", None),
            ("configs/skills/x", None),
            ("configs/skills/x/SKILL.md", b"12345"),
            ("configs/.DS_Store", b""),
        ]
    )
    assert entries_from_archive(data, 1) == [FileEntry("a.md", 3, False), FileEntry("skills", 0, True)]
    assert FileEntry("skills/x/SKILL.md", 5, False) in entries_from_archive(data, 3)
    assert file_from_archive(_tar([("a.md", b"hello")])) == b"hello"
    assert file_from_archive(_tar([("d", None)])) is None


def test_generated_config_resists_yaml_injection() -> None:
    name = 'Evil"\nruntime: pwned\n'
    paths = ["prompt.md", "skills/a\nruntime: x/SKILL.md", "skills/good/SKILL.md", "sub/readme.md"]
    doc = yaml.safe_load(generate_default_config(name, paths))
    assert doc["name"] == name
    assert "runtime" not in doc
    assert doc["prompt_files"] == ["prompt.md"]
    assert doc["skills"] == ["a\nruntime: x", "good"]
    assert doc["tier"] == 3 and doc["model"] == "anthropic:claude-haiku-4-5-20251001"
    assert doc["a2a"] == {"port": 8000, "streaming": True, "push_notifications": True}
    assert doc["env"]["required"] == ["ANTHROPIC_API_KEY"] and doc["tools"] == []
    empty = yaml.safe_load(generate_default_config("x", []))
    assert empty["prompt_files"] == ["system-prompt.md"] and empty["skills"] == []


def test_template_summary_keys_and_omissions() -> None:
    doc = {
        "name": "Full",
        "description": "d",
        "tier": 2,
        "runtime": "echo",
        "skills": ["a", "b"],
        "runtime_config": {
            "model": "m1",
            "models": [{"id": "x", "name": "X", "required_env": ["K"]}, {"id": "y"}],
            "required_env": ["API_KEY"],
            "provision_timeout_seconds": 90,
        },
    }
    item = template_summary("full", doc)
    assert item is not None
    assert list(item) == [
        "id",
        "name",
        "description",
        "tier",
        "runtime",
        "model",
        "models",
        "required_env",
        "skills",
        "skill_count",
        "provision_timeout_seconds",
    ]
    assert item["models"] == [{"id": "x", "name": "X", "required_env": ["K"]}, {"id": "y"}]
    minimal = template_summary("min", {"name": "Min", "model": "top"})
    assert minimal == {
        "id": "min",
        "name": "Min",
        "description": "",
        "tier": 0,
        "runtime": "",
        "model": "top",
        "skills": None,
        "skill_count": 0,
    }
    assert template_summary("bad", {"tier": "three"}) is None
    assert template_summary("bad", ["not", "a", "mapping"]) is None
    assert template_summary("bad", {"skills": {"a": 1}}) is None


def test_import_body_and_tree_validation() -> None:
    bad_bodies: list[Any] = [[], {"name": "", "files": {}}, {"name": "x"}, {"name": "x", "files": {"a": 1}}]
    for bad_body in bad_bodies:
        with pytest.raises(ApiError):
            parse_import_body(bad_body)
    assert parse_import_body({"name": "x", "files": {}}).files == {}
    assert confined_tree({"a/./b.md": "x"}) == {"a/b.md": b"x"}
    for bad in ({"../x": ""}, {"/abs": ""}, {"a": "", "a/b": ""}, {"a/b": "", "a//b": ""}, {"C:\\x": ""}):
        with pytest.raises(ApiError) as err:
            confined_tree(bad)
        assert err.value.body == {"error": "invalid request body"}


def test_resize_message_parsing() -> None:
    assert parse_resize('{"type":"resize","cols":120,"rows":40}') == (40, 120)
    assert parse_resize('{"rows": 5, "type": "resize", "cols": 7}') == (5, 7)
    for keys in (
        "ls -la\r",
        '{"type":"resize","cols":0,"rows":1}',
        '{"type":"resize","cols":true,"rows":1}',
        '{"type":"resize","cols":1}',
        '{"type":"other","cols":1,"rows":1}',
        "{not json",
        '{"resize": ' + "[" * 100_000,  # nesting past the parser: keystrokes, not a RecursionError
    ):
        assert parse_resize(keys) is None


def test_terminal_origin_rule(tmp_path: Path) -> None:
    s = Settings(DATA_DIR=tmp_path, CORS_ORIGINS=" https://canvas.example.com ,http://a.b")
    assert origin_allowed(s, "")
    assert origin_allowed(s, "http://localhost:3000") and origin_allowed(s, "https://localhost:1")
    assert origin_allowed(s, "https://canvas.example.com")
    assert not origin_allowed(s, "https://canvas.example.com.evil.com")
    assert not origin_allowed(s, "http://localhost.evil.com")
    assert not origin_allowed(s, "https://evil.com")


def test_find_template_by_name(tmp_path: Path) -> None:
    (tmp_path / "seo-agent").mkdir()
    (tmp_path / "org-pm").mkdir()
    (tmp_path / "org-pm" / "config.yaml").write_text('name: "PM"\n')
    (tmp_path / "ws-abc").mkdir()
    (tmp_path / "ws-abc" / "config.yaml").write_text("name: Hidden\n")
    os.symlink(tmp_path / "org-pm", tmp_path / "linked")
    assert find_template_by_name(tmp_path, "SEO Agent") == tmp_path / "seo-agent"
    assert find_template_by_name(tmp_path, "pm") == tmp_path / "org-pm"
    assert find_template_by_name(tmp_path, "Hidden") is None
    assert find_template_by_name(tmp_path, "linked") is None
    assert find_template_by_name(tmp_path / "missing", "x") is None
