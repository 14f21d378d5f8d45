"""Plugin sources, manifest items and the small pure rules of the plugin endpoints (spec 06 §3.1–§3.3)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from workspace_server.auth.deps import AuthInfo
from workspace_server.common.errors import ApiError
from workspace_server.config import Settings, parse_go_duration
from workspace_server.egress import EgressPolicy
from workspace_server.plugins import sources
from workspace_server.plugins.allowlist import check_ownership, parse_put_body
from workspace_server.plugins.manifest import is_handler_name, plugin_item, supports_runtime
from workspace_server.plugins.service import pack_tar_gz, parse_install_body, strip_plugin_blocks


@pytest.mark.parametrize(
    ("raw", "scheme", "spec"),
    [
        ("my-plugin", "local", "my-plugin"),
        ("  local://x  ", "local", "x"),
        ("github://a/b#v1", "github", "a/b#v1"),
        ("git+ssh://host/x", "git+ssh", "host/x"),
    ],
)
def test_parse_source(raw: str, scheme: str, spec: str) -> None:
    parsed = sources.parse_source(raw)
    assert (parsed.scheme, parsed.spec, parsed.raw) == (scheme, spec, f"{scheme}://{spec}")


@pytest.mark.parametrize("raw", ["", "   ", "local://", "github://   "])
def test_parse_source_rejects_empty(raw: str) -> None:
    with pytest.raises(sources.InvalidSource):
        sources.parse_source(raw)


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "Upper", "-x", "a..b", "", "x" * 129])
def test_local_rejects_bad_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(sources.InvalidPluginName):
        sources.LocalResolver(tmp_path).validate(name)


def test_github_spec_rules() -> None:
    gh = sources.GithubResolver("https://github.com", allow_unpinned=False)
    gh.validate("acme/tool#v1.2")
    for bad in ("acme", "acme/tool/x", "-a/b#v1", "a/b#-upload-pack=x", "a/b#", "a b/c#v1"):
        with pytest.raises(sources.InvalidSource):
            gh.validate(bad)
    with pytest.raises(sources.UnpinnedSource):
        gh.validate("acme/tool")
    sources.GithubResolver("https://github.com", allow_unpinned=True).validate("acme/tool")
    argv = gh.clone_argv("acme", "tool", "v1", "/tmp/x/repo")
    url = "https://github.com/acme/tool.git"
    no_redirects = ["-c", "http.followRedirects=false"]
    assert argv == ["git", *no_redirects, "clone", "--depth=1", "--branch", "v1", "--", url, "/tmp/x/repo"]
    assert "--branch" not in gh.clone_argv("acme", "tool", None, "/t")


def test_clone_failures_are_classified() -> None:
    assert isinstance(sources.classify_clone_failure("ERROR: Repository not found."), sources.PluginNotFound)
    msg = "warning: Could not find remote branch v9 to clone.\nfatal: Remote branch v9 not found in upstream"
    assert isinstance(sources.classify_clone_failure(msg), sources.PluginNotFound)
    auth = "fatal: Authentication failed for 'https://github.com/a/b.git/'"
    assert isinstance(sources.classify_clone_failure(auth), sources.FetchFailed)


async def test_missing_git_is_a_fetch_failure(tmp_path: Path) -> None:
    policy = EgressPolicy(production=True, saas=False)
    gh = sources.GithubResolver("https://93.184.215.14", False, git=str(tmp_path / "no-git"), policy=policy)
    with pytest.raises(sources.FetchFailed):
        await gh.fetch("a/b#v1", tmp_path / "dest", 1000)


def test_copy_skips_symlinks_and_caps_size(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "sub" / "b.txt").write_text("world")
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", src / "link")
    os.symlink(tmp_path, src / "dirlink")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    dest.mkdir()
    assert sources.copy_regular_tree(src, dest, 100, frozenset({".git"})) == 10
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == ["a.txt", "sub/b.txt"]
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    with pytest.raises(sources.StagedTooLarge):
        sources.copy_regular_tree(src, tmp_path / "dest2", 7)


def test_integrity() -> None:
    files = {"plugin.yaml": b"name: x\n", "skills/a/SKILL.md": b"# a"}
    digest = hashlib.sha256(b"plugin.yaml\0name: x\nskills/a/SKILL.md\0# a").hexdigest()
    assert sources.integrity_ok(files)
    assert sources.integrity_ok({**files, "manifest.json": b'{"name":"x"}'})
    assert sources.integrity_ok({**files, "manifest.json": json.dumps({"sha256": digest.upper()}).encode()})
    assert not sources.integrity_ok({**files, "manifest.json": json.dumps({"sha256": "0" * 64}).encode()})
    assert not sources.integrity_ok({**files, "manifest.json": b'{"sha256": 5}'})
    assert not sources.integrity_ok({**files, "manifest.json": b"not json"})


def test_registry_overwrites_and_sorts(tmp_path: Path) -> None:
    reg = sources.SourceRegistry()
    reg.register(sources.LocalResolver(tmp_path))
    reg.register(sources.GithubResolver("x", False))
    reg.register(sources.LocalResolver(tmp_path / "other"))
    assert reg.schemes() == ["github", "local"]
    assert isinstance(reg.get("local"), sources.LocalResolver)
    with pytest.raises(sources.UnknownScheme):
        reg.get("ftp")


def test_plugin_item_is_forgiving() -> None:
    raw = b"version: 1.0\ndescription: d\nauthor: me\ntags: [a, 3, b]\nskills: []\nruntimes: [claude-code]\n"
    item = plugin_item("p", raw, runtime="claude_code")
    assert item == {
        "name": "p",
        "version": "",  # a YAML float, not a string
        "description": "d",
        "author": "me",
        "tags": ["a", "b"],
        "skills": None,
        "runtimes": ["claude-code"],
        "supported_on_runtime": True,
    }
    empty = plugin_item("q", b"::: not yaml [")
    assert empty["tags"] is None and empty["description"] == "" and "supported_on_runtime" not in empty
    assert supports_runtime(empty, "anything")
    assert not supports_runtime(item, "langgraph")
    assert plugin_item("r", b"- a list")["version"] == ""


def test_handler_name_rule() -> None:
    assert is_handler_name("ok.name")
    assert not any(is_handler_name(n) for n in ("", "a/b", "a\\b", "..", "a..b"))


def test_strip_plugin_blocks() -> None:
    text = "intro\n# Plugin: foo / rules\nline\n\nmore\n\nafter\n# Plugin: bar / x\nkeep\n"
    assert strip_plugin_blocks(text, "foo") == "intro\nafter\n# Plugin: bar / x\nkeep\n"
    nested = "# Plugin: foo / a\nx\n# Plugin: bar / b\ny\n"
    assert strip_plugin_blocks(nested, "foo") == "# Plugin: bar / b\ny\n"
    assert strip_plugin_blocks(text, "zzz") == text


def test_install_body_rules() -> None:
    assert parse_install_body(b'{"source":"local://x","sha256":" AB "}') == ("local://x", "AB")
    for raw, msg in (
        (b"nope", "invalid request body"),
        (b"[]", "invalid request body"),
        (b'{"source": 5}', "invalid request body"),
        (b"{}", "source is required"),
        (b'{"source": "  "}', "source is required"),
    ):
        with pytest.raises(ApiError) as err:
            parse_install_body(raw)
        assert (err.value.status, err.value.body["error"]) == (400, msg)


def test_allowlist_body_and_ownership() -> None:
    assert parse_put_body({"plugins": ["a", "b"], "enabled_by": "me"}) == (["a", "b"], "me")
    assert parse_put_body({"enabled_by": "me"}) == (None, "me")
    with pytest.raises(ApiError) as err:
        parse_put_body({"plugins": ["../x"], "enabled_by": "me"})
    assert err.value.body["plugin_name"] == "../x" and "detail" in err.value.body
    with pytest.raises(ApiError) as err:
        parse_put_body({"plugins": []})
    assert err.value.body == {"error": "enabled_by is required"}
    check_ownership(AuthInfo("admin_token"), "org")
    check_ownership(AuthInfo("org_token", org_token_id="t", org_id="org"), "org")
    for auth in (
        AuthInfo("org_token", org_token_id="t"),
        AuthInfo("org_token", org_token_id="t", org_id="x"),
    ):
        with pytest.raises(ApiError) as err:
            check_ownership(auth, "org")
        assert (err.value.status, err.value.body) == (403, {"error": "org access denied"})


def test_pack_tar_gz_is_relative() -> None:
    data = pack_tar_gz({"plugin.yaml": b"x", "skills/a/SKILL.md": b"y"})
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["plugin.yaml", "skills/a/SKILL.md"]
        assert all(m.isfile() for m in tar.getmembers())


def test_limits_settings() -> None:
    s = Settings(PLUGIN_INSTALL_BODY_MAX_BYTES="-1", PLUGIN_INSTALL_FETCH_TIMEOUT="90s")
    assert (s.plugin_body_max_bytes, s.plugin_fetch_timeout_seconds, s.plugin_max_dir_bytes) == (
        65536,
        90.0,
        104857600,
    )
    assert Settings(PLUGIN_INSTALL_FETCH_TIMEOUT="bogus").plugin_fetch_timeout_seconds == 300.0
    assert not Settings(PLUGIN_ALLOW_UNPINNED="yes").plugin_allow_unpinned
    assert (parse_go_duration("1m30s"), parse_go_duration("10")) == (90.0, None)


async def test_github_source_host_goes_through_the_egress_policy(tmp_path: Path) -> None:
    """PLUGIN_GITHUB_BASE_URL on a private or loopback address is refused before git runs (issue 11 §2)."""
    policy = EgressPolicy(production=True, saas=False)
    for base in ("http://10.0.0.1", "http://127.0.0.1:9", "http://167772161", "https://[::ffff:10.0.0.1]"):
        gh = sources.GithubResolver(base, False, git=str(tmp_path / "must-not-run"), policy=policy)
        with pytest.raises(sources.FetchFailed, match="egress policy"):
            await gh.fetch("a/b#v1", tmp_path / "dest", 1000)
    for base in ("ssh://github.com", "git://github.com"):
        with pytest.raises(sources.FetchFailed, match="http"):
            await sources.GithubResolver(base, False, policy=policy).fetch("a/b#v1", tmp_path / "d", 1)
