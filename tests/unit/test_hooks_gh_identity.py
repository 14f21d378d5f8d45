"""gh-identity env mutator (spec 02 §5) and the gh wrapper script it ships."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from workspace_server.provisioner.hooks import (
    GH_WRAPPER_SCRIPT,
    GhIdentityConfig,
    GhIdentityMutator,
    HookConfigError,
    ProvisionInfo,
    load_gh_identity_config,
    sanitize_role,
)

WS = "d3605ef2-f7d6-4c1b-9a8e-0123456789ab"


async def test_no_role_is_a_no_op() -> None:
    m = GhIdentityMutator(GhIdentityConfig({"default": "bob"}))
    for env in ({}, {"MOLECULE_AGENT_ROLE": "   "}, {"OTHER": "x"}):
        before = dict(env)
        await m.mutate_env(WS, env, None)
        assert env == before
    env = {}
    await m.mutate_env(WS, env, ProvisionInfo(role=None))
    assert env == {}


async def test_injects_every_field() -> None:
    m = GhIdentityMutator(GhIdentityConfig({"PMM-Lead": "hongming", "default": "bob"}))
    env = {"MOLECULE_AGENT_ROLE": " pmm-lead ", "OPENAI_API_KEY": "sk"}
    await m.mutate_env(WS, env, None)
    digest = hashlib.sha256(GH_WRAPPER_SCRIPT.encode()).hexdigest()
    assert (
        env
        == {
            "OPENAI_API_KEY": "sk",
            "MOLECULE_AGENT_ROLE": "Pmm-Lead",
            "MOLECULE_OWNER": "hongming",  # case-insensitive role lookup
            "MOLECULE_WORKSPACE_ID": WS,
            "MOLECULE_ATTRIBUTION_BADGE": "🤖 [Agent: Pmm-Lead · ws-d3605ef2]",
            "MOLECULE_GH_WRAPPER_B64": base64.b64encode(GH_WRAPPER_SCRIPT.encode()).decode(),
            "MOLECULE_GH_WRAPPER_SHA": digest[:12],
        }
    )
    assert base64.b64decode(env["MOLECULE_GH_WRAPPER_B64"]).decode().startswith("#!/usr/bin/env bash")


async def test_owner_fallbacks_and_role_from_info() -> None:
    m = GhIdentityMutator(GhIdentityConfig({"PMM": "alice", "default": "bob"}))
    env: dict[str, str] = {}
    await m.mutate_env(WS, env, ProvisionInfo(role="researcher"))
    assert (env["MOLECULE_AGENT_ROLE"], env["MOLECULE_OWNER"]) == ("Researcher", "bob")
    env = {"MOLECULE_AGENT_ROLE": "pmm"}
    await m.mutate_env(WS, env, None)
    assert env["MOLECULE_OWNER"] == "alice"
    env = {"MOLECULE_AGENT_ROLE": "pmm"}
    await GhIdentityMutator().mutate_env("ws-abc", env, None)
    assert env["MOLECULE_OWNER"] == "" and env["MOLECULE_ATTRIBUTION_BADGE"] == "🤖 [Agent: Pmm · ws-abc]"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("", ""),
        ("  pmm-lead ", "Pmm-Lead"),
        ("ResearchLead", "ResearchLead"),
        ("multi-part-role", "Multi-Part-Role"),
        ("  -starts-with-dash", "-Starts-With-Dash"),
        ("a--b", "A--B"),
    ],
)
def test_sanitize_role(raw: str, want: str) -> None:
    assert sanitize_role(raw) == want


def test_config_loading(tmp_path: Path) -> None:
    assert load_gh_identity_config("") == GhIdentityConfig()
    assert load_gh_identity_config(str(tmp_path / "missing.yaml")) == GhIdentityConfig()
    cfg = tmp_path / "gh.yaml"
    cfg.write_text(
        "roles:\n  PMM:\n    owner: alice\n  default:\n    owner: bob\n  Empty:\n  Num:\n    owner: 42\n"
    )
    loaded = load_gh_identity_config(str(cfg))
    assert loaded.roles == {"PMM": "alice", "default": "bob", "Empty": "", "Num": "42"}
    assert [loaded.resolve_owner(r) for r in ("pmm", "Pmm", "unknown", "", "empty")] == [
        "alice",
        "alice",
        "bob",
        "bob",
        "bob",  # an entry without an owner falls through to default
    ]
    cfg.write_text("")
    assert load_gh_identity_config(str(cfg)) == GhIdentityConfig()
    cfg.write_text("other: 1\n")
    assert load_gh_identity_config(str(cfg)) == GhIdentityConfig()


@pytest.mark.parametrize(
    "text",
    ["roles: [a]\n", "- a\n", "roles:\n  PMM: alice\n", "roles:\n  PMM:\n    owner: [x]\n", "roles: {a: b\n"],
)
def test_bad_config_is_an_error(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "gh.yaml"
    cfg.write_text(text)
    with pytest.raises(HookConfigError):
        load_gh_identity_config(str(cfg))


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    cfg = tmp_path / "gh.yaml"
    cfg.write_text("roles: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(HookConfigError):  # safe_load refuses the tag
        load_gh_identity_config(str(cfg))


# ---- the wrapper script itself ----


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    real = tmp_path / "real"
    real.mkdir()
    fake = real / "gh"
    # the "real" gh prints each argument on its own NUL-terminated record
    fake.write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf \'%s\\0\' "$a"; done\n')
    fake.chmod(0o755)
    shim = tmp_path / "shim"
    shim.mkdir()
    script = shim / "gh"
    script.write_text(GH_WRAPPER_SCRIPT)
    script.chmod(0o755)
    return tmp_path


def run_gh(root: Path, args: list[str], **env: str) -> list[str]:
    full = {"PATH": f"{root / 'shim'}:{root / 'real'}:{os.environ.get('PATH', '/usr/bin:/bin')}", **env}
    out = subprocess.run([str(root / "shim" / "gh"), *args], env=full, capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


async def identity_env(owner: str = "alice") -> dict[str, str]:
    env = {"MOLECULE_AGENT_ROLE": "pmm-lead"}
    await GhIdentityMutator(GhIdentityConfig({"default": owner})).mutate_env(WS, env, None)
    return env


async def test_wrapper_stamps_body_and_rewrites_assignee(wrapper: Path) -> None:
    env = await identity_env()
    badge = env["MOLECULE_ATTRIBUTION_BADGE"]
    got = run_gh(wrapper, ["issue", "create", "--title", "T", "--body", "hi\n", "--assignee", "@me"], **env)
    assert got == ["issue", "create", "--title", "T", "--body", f"{badge}\n\nhi\n", "--assignee", "alice"]
    got = run_gh(wrapper, ["pr", "comment", "7", "--body=done", "-a", "@me", "--assignee=@me"], **env)
    assert got == ["pr", "comment", "7", f"--body={badge}\n\ndone", "-a", "alice", "--assignee=alice"]


async def test_wrapper_drops_me_without_owner_and_passes_others(wrapper: Path) -> None:
    env = await identity_env(owner="")
    got = run_gh(wrapper, ["issue", "create", "-b", "x", "--assignee", "@me", "-a", "carol"], **env)
    assert got == ["issue", "create", "-b", f"{env['MOLECULE_ATTRIBUTION_BADGE']}\n\nx", "-a", "carol"]
    # `pr checkout -b` is a branch name, not a body: untouched
    assert run_gh(wrapper, ["pr", "checkout", "-b", "feature"], **env) == ["pr", "checkout", "-b", "feature"]
    assert run_gh(wrapper, ["repo", "view", "--body", "x"], **env) == ["repo", "view", "--body", "x"]


def test_wrapper_passes_through_without_role(wrapper: Path) -> None:
    args = ["issue", "create", "--body", "x", "--assignee", "@me"]
    assert run_gh(wrapper, args) == args
    assert run_gh(wrapper, []) == []
