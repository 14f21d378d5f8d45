"""Provisioner pieces that need no engine: runtimes, tiers, env, mounts, names, tar, backend choice."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from workspace_server.config import Settings
from workspace_server.provisioner import (
    BackendError,
    ErrNoBackend,
    RuntimeImagesError,
    StartSpec,
    make_backend,
    require_backend,
)
from workspace_server.provisioner.base import (
    build_env,
    gather_config_files,
    instance_name,
    normalise_newlines,
    validate_workspace_mount,
)
from workspace_server.provisioner.docker import config_tar, is_not_found_error, parse_user
from workspace_server.provisioner.process import ProcessBackend, is_unsafe_env
from workspace_server.provisioner.runtimes import AGENT_IMAGE, RuntimeImages, parse_runtime_images
from workspace_server.provisioner.tiers import tier_limits


def settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


# ---- runtimes ----
def test_builtin_runtime_images() -> None:
    images = RuntimeImages()
    assert images.image_for("echo") == AGENT_IMAGE == "molecule/workspace-agent:latest"
    assert images.image_for("hermes") == "ghcr.io/molecule-ai/workspace-template-hermes:latest"
    assert images.image_for("claude-code") == "ghcr.io/molecule-ai/workspace-template-claude-code:latest"
    # unknown and empty runtimes get the reference's default (langgraph) image
    assert images.image_for("mystery") == "ghcr.io/molecule-ai/workspace-template-langgraph:latest"
    assert images.image_for("") == "ghcr.io/molecule-ai/workspace-template-langgraph:latest"


def test_runtime_images_env_overrides_and_adds() -> None:
    raw = '{"hermes":"127.0.0.1:5000/hermes:v2","mine":"me/agent:1","*":"molecule/workspace-agent:latest"}'
    images = RuntimeImages.from_settings(settings(RUNTIME_IMAGES=raw))
    assert images.image_for("hermes") == "127.0.0.1:5000/hermes:v2"
    assert images.image_for("mine") == "me/agent:1"
    assert images.image_for("mystery") == "molecule/workspace-agent:latest"
    assert images.image_for("echo") == AGENT_IMAGE  # untouched built-ins stay
    assert "mine" in images.known() and "*" not in images.known()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "got a JSON list"),
        ('{"echo": 3}', "invalid image for runtime 'echo'"),
        ('{"echo": "has space:1"}', "invalid image for runtime 'echo'"),
        ('{"echo": "-rm"}', "invalid image"),
        ('{"../x": "a/b"}', "invalid runtime name"),
    ],
)
def test_runtime_images_invalid(raw: str, fragment: str) -> None:
    with pytest.raises(RuntimeImagesError) as err:
        parse_runtime_images(raw)
    assert str(err.value).startswith("RUNTIME_IMAGES must be a JSON object")
    assert fragment in str(err.value)


async def test_make_backend_fails_startup_on_bad_runtime_images(tmp_path: Path) -> None:
    s = settings(WORKSPACE_BACKEND="process", RUNTIME_IMAGES="{oops", DATA_DIR=str(tmp_path))
    with pytest.raises(RuntimeImagesError):
        await make_backend(s)


# ---- backend choice ----
async def test_make_backend_none_and_process(tmp_path: Path) -> None:
    assert await make_backend(settings(WORKSPACE_BACKEND="none")) is None
    backend = await make_backend(settings(WORKSPACE_BACKEND="process", DATA_DIR=str(tmp_path)))
    assert isinstance(backend, ProcessBackend) and backend.name == "process"


async def test_auto_without_engine_falls_back_to_process_outside_production(tmp_path: Path) -> None:
    dead = f"unix://{tmp_path}/no-docker.sock"
    s = settings(WORKSPACE_BACKEND="auto", DOCKER_HOST=dead, DATA_DIR=str(tmp_path))
    assert isinstance(await make_backend(s), ProcessBackend)
    prod = settings(WORKSPACE_BACKEND="auto", DOCKER_HOST=dead, MOLECULE_ENV="production")
    assert await make_backend(prod) is None
    assert await make_backend(settings(WORKSPACE_BACKEND="docker", DOCKER_HOST=dead)) is None


def test_require_backend() -> None:
    with pytest.raises(ErrNoBackend) as err:
        require_backend(None)
    assert err.value.message == "no workspace backend available"


# ---- tiers ----
def test_tier_defaults_and_unknown_tier_is_t2() -> None:
    s = settings()
    t2 = tier_limits(s, 2)
    assert (t2.memory_mb, t2.cpu_shares, t2.nano_cpus) == (512, 1024, 1_000_000_000)
    for tier in (0, 7, -1, None):
        assert tier_limits(s, tier) == t2
    t1 = tier_limits(s, 1)
    kw = t1.host_config()
    assert kw["read_only"] is True and kw["cap_drop"] == ["ALL"]
    assert kw["tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=64m"}
    assert t1.config_mount_only is True


def test_tier_overrides_count_only_when_positive() -> None:
    s = settings(TIER3_MEMORY_MB="8192", TIER3_CPU_SHARES="4096", TIER2_MEMORY_MB="0", TIER2_CPU_SHARES="x")
    t3 = tier_limits(s, 3)
    assert t3.memory_mb == 8192 and t3.nano_cpus == 4_000_000_000
    assert t3.host_config()["mem_limit"] == 8 * 1024**3
    t2 = tier_limits(s, 2)
    assert (t2.memory_mb, t2.cpu_shares) == (512, 1024)


def test_dangerous_tier_flags_need_explicit_opt_in() -> None:
    for tier in (3, 4):
        lim = tier_limits(settings(), tier)
        kw = lim.host_config()
        assert "privileged" not in kw and "pid_mode" not in kw
        assert not lim.host_network and not lim.docker_socket
    t4 = tier_limits(settings(ALLOW_PRIVILEGED_TIERS=True), 4)
    assert t4.host_config()["privileged"] is True and t4.host_config()["pid_mode"] == "host"
    assert t4.host_network and t4.docker_socket and t4.memory_mb == 4096
    t3 = tier_limits(settings(ALLOW_PRIVILEGED_TIERS=True), 3)
    assert t3.privileged and not t3.host_network and not t3.docker_socket


# ---- env, names, mounts ----
def test_env_order_and_overrides() -> None:
    spec = StartSpec(
        workspace_id="w1",
        tier=3,
        env={"OPENAI_API_KEY": "k", "PLUGINS_DIR": "/mine", "A2A_PORT": "1"},
        platform_url="http://p:8080",
        awareness_url="http://aw",
        awareness_namespace="workspace:w1",
    )
    env = build_env(spec, "/configs", {"A2A_PORT": "8000", "MOLECULE_AGENT_URL": "http://localhost:9"})
    assert list(env) == [
        "WORKSPACE_ID",
        "WORKSPACE_CONFIG_PATH",
        "PLATFORM_URL",
        "MOLECULE_URL",
        "TIER",
        "PLUGINS_DIR",
        "PYTHONPATH",
        "AWARENESS_NAMESPACE",
        "AWARENESS_URL",
        "OPENAI_API_KEY",
        "A2A_PORT",
        "MOLECULE_AGENT_URL",
    ]
    assert env["PLATFORM_URL"] == env["MOLECULE_URL"] == "http://p:8080"
    assert env["TIER"] == "3" and env["PLUGINS_DIR"] == "/mine"  # user env overrides built-ins
    assert env["A2A_PORT"] == "8000"  # but not our port plumbing


def test_awareness_needs_both_values() -> None:
    env = build_env(StartSpec(workspace_id="w", awareness_url="http://aw"), "/configs", {})
    assert "AWARENESS_URL" not in env and "AWARENESS_NAMESPACE" not in env


def test_instance_name() -> None:
    assert instance_name("longer-than-twelve-characters") == "ws-longer-than-"
    assert instance_name("0123456789abcdef") == "ws-0123456789ab"


@pytest.mark.parametrize(
    ("path", "access", "expected"),
    [
        ("", "none", None),
        ("/home/me/proj", "none", None),
        ("", "", None),
        ("/home/me/proj", "read_only", "/home/me/proj"),
        ("/home/me/proj/", "read_write", "/home/me/proj"),
    ],
)
def test_workspace_mount_ok(path: str, access: str, expected: str | None) -> None:
    assert validate_workspace_mount(path, access) == expected


@pytest.mark.parametrize(
    ("path", "access"),
    [
        ("", "read_only"),
        ("relative/dir", "read_write"),
        ("/home/../etc", "read_write"),
        ("/etc", "read_only"),
        ("/usr/local/x", "read_write"),
        ("/var/run", "read_write"),
        ("/", "read_write"),
        ("/home/me", "everything"),
    ],
)
def test_workspace_mount_rejected(path: str, access: str) -> None:
    with pytest.raises(BackendError):
        validate_workspace_mount(path, access)


def test_not_found_truth_table() -> None:
    assert is_not_found_error("Error: No such container: ws-abc")
    assert is_not_found_error("container not found")
    for msg in ("context deadline exceeded", "EOF", "connection refused", "i/o timeout", ""):
        assert not is_not_found_error(msg)


def test_template_files_normalised_and_config_files_win(tmp_path: Path) -> None:
    (tmp_path / "skills" / "a").mkdir(parents=True)
    (tmp_path / "config.yaml").write_bytes(b"name: template\r\n")
    (tmp_path / "run.sh").write_bytes(b"echo hi\r\n")
    (tmp_path / "skills" / "a" / "SKILL.md").write_bytes(b"# A\r\n")
    (tmp_path / "escape").symlink_to("/etc/passwd")
    spec = StartSpec(workspace_id="w", template_dir=tmp_path, config_files={"config.yaml": b"name: mine\n"})
    files = gather_config_files(spec)
    assert files == {"config.yaml": b"name: mine\n", "run.sh": b"echo hi\n", "skills/a/SKILL.md": b"# A\n"}
    assert normalise_newlines("data.bin", b"a\r\n") == b"a\r\n"


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", ""])
def test_unsafe_config_file_names_rejected(bad: str) -> None:
    with pytest.raises(BackendError):
        gather_config_files(StartSpec(workspace_id="w", config_files={bad: b"x"}))


def test_config_tar_modes_and_owner() -> None:
    data = config_tar(
        {".auth_token": b"t", "config.yaml": b"c", "skills/a/SKILL.md": b"s"}, 1000, 1001, "configs/"
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {
        "configs",
        "configs/.auth_token",
        "configs/config.yaml",
        "configs/skills",
        "configs/skills/a",
        "configs/skills/a/SKILL.md",
    }
    assert members["configs/.auth_token"].mode == 0o600
    assert members["configs/config.yaml"].mode == 0o644
    assert members["configs/skills"].isdir() and members["configs/skills"].mode == 0o755
    assert all((m.uid, m.gid) == (1000, 1001) for m in members.values())


@pytest.mark.parametrize(
    ("user", "passwd", "expected"),
    [
        ("", "", (0, 0)),
        ("1000", "", (1000, 1000)),
        ("1000:1000", "", (1000, 1000)),
        ("1000:50", "", (1000, 50)),
        ("agent", "root:x:0:0::/root:/bin/sh\nagent:x:1001:1002::/home/agent:/bin/sh\n", (1001, 1002)),
        ("agent:7", "agent:x:1001:1002::/home/agent:/bin/sh\n", (1001, 7)),
        ("ghost", "root:x:0:0::/root:/bin/sh\n", (0, 0)),
    ],
)
def test_parse_user(user: str, passwd: str, expected: tuple[int, int]) -> None:
    assert parse_user(user, passwd) == expected


def test_process_backend_drops_code_injection_env() -> None:
    for name in ("LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP", "PATH", "BASH_ENV", "NODE_OPTIONS"):
        assert is_unsafe_env(name)
    for name in ("OPENAI_API_KEY", "MODEL_PROVIDER", "GIT_AUTHOR_NAME", "ENVIRONMENT"):
        assert not is_unsafe_env(name)
