"""The process backend: the reference agent as a local subprocess, with the docker backend's lifecycle."""

from __future__ import annotations

import os
import signal
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.provisioner_support import (
    WorkspaceIds,
    check_not_running_refused,
    check_tty_and_session,
    echo_spec,
    echoed_text,
    ids_fixture,  # noqa: F401 - registers the ids fixture
    wait_for_reply,
    wait_until,
)
from workspace_server.config import Settings
from workspace_server.provisioner import BackendError, StartSpec
from workspace_server.provisioner.process import ProcessBackend

CONFIG_YAML = b"name: Process Echo\nskills: [echo]\n"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(DATA_DIR=tmp_path / "data", WORKSPACE_BACKEND="process")


@pytest.fixture
async def backend(settings: Settings) -> AsyncIterator[ProcessBackend]:
    b = ProcessBackend(settings)
    yield b
    await b.close()


def spec_for(ws_id: str, **kw: Any) -> StartSpec:
    return echo_spec(ws_id, CONFIG_YAML, **{"image": "ignored/by-process:1", **kw})


def agent_pid(backend: ProcessBackend, ws_id: str) -> int:
    return backend._procs[ws_id].pid


async def test_start_serves_a2a_with_config_files_and_env(
    backend: ProcessBackend, ids: WorkspaceIds, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVER_ONLY_SECRET", "must-not-leak")  # the server's env is not inherited
    ws_id = ids.new()
    token = b"tok-" + uuid.uuid4().hex.encode()
    spec = spec_for(
        ws_id,
        env={"CUSTOM_VAR": "v1", "LD_PRELOAD": "/tmp/evil.so", "PYTHONSTARTUP": "/tmp/evil.py"},
        config_files={"config.yaml": CONFIG_YAML, ".auth_token": token},
    )
    started = await backend.start(spec)
    port = int(started.url.rsplit(":", 1)[1])
    assert started.url == f"http://127.0.0.1:{port}"
    assert echoed_text(await wait_for_reply(started.url, "hello process")) == "hello process"
    async with httpx.AsyncClient() as http:
        card = (await http.get(started.url + "/.well-known/agent-card.json")).json()
    assert card["name"] == "Process Echo" and card["url"] == f"http://localhost:{port}"

    config_dir = Path(settings.DATA_DIR).resolve() / "workspaces" / ws_id / "configs"
    assert (config_dir / ".auth_token").read_bytes() == token
    assert stat.S_IMODE((config_dir / ".auth_token").stat().st_mode) == 0o600
    assert (config_dir / "config.yaml").read_bytes() == CONFIG_YAML

    env = psutil.Process(agent_pid(backend, ws_id)).environ()
    assert env["WORKSPACE_ID"] == ws_id
    assert env["WORKSPACE_CONFIG_PATH"] == str(config_dir)
    assert env["PLATFORM_URL"] == env["MOLECULE_URL"] == "http://127.0.0.1:9"
    assert env["CUSTOM_VAR"] == "v1"
    assert env["A2A_PORT"] == str(port) and env["A2A_HOST"] == "127.0.0.1"
    assert "LD_PRELOAD" not in env and "PYTHONSTARTUP" not in env and "SERVER_ONLY_SECRET" not in env
    # listening on loopback only
    proc = psutil.Process(agent_pid(backend, ws_id))
    list_conns = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6 spelling
    conns = [c for c in list_conns() if c.status == "LISTEN"]
    assert [(c.laddr.ip, c.laddr.port) for c in conns] == [("127.0.0.1", port)]
    assert "A2A listening" in await backend.logs(ws_id, tail=50)


async def test_crash_is_detected_and_stop_is_idempotent(backend: ProcessBackend, ids: WorkspaceIds) -> None:
    ws_id = ids.new()
    await backend.start(spec_for(ws_id))
    assert await backend.is_running(ws_id) is True
    os.kill(agent_pid(backend, ws_id), signal.SIGKILL)

    async def stopped() -> bool:
        return not await backend.is_running(ws_id)

    await wait_until(stopped, "the killed agent to read as not running")
    await backend.stop(ws_id)
    await backend.stop(ws_id)
    unknown = str(uuid.uuid4())
    await backend.stop(unknown)
    assert await backend.is_running(unknown) is False
    with pytest.raises(BackendError):
        await backend.stop("../../etc")


async def test_restart_replaces_the_agent_and_keeps_configs(
    backend: ProcessBackend, ids: WorkspaceIds, settings: Settings
) -> None:
    ws_id = ids.new()
    first = await backend.start(spec_for(ws_id))
    await wait_for_reply(first.url)
    old_pid = agent_pid(backend, ws_id)
    second = await backend.start(spec_for(ws_id, config_files={".auth_token": b"rotated"}))
    await wait_for_reply(second.url)
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    config_dir = Path(settings.DATA_DIR).resolve() / "workspaces" / ws_id / "configs"
    assert (config_dir / ".auth_token").read_bytes() == b"rotated"
    assert (config_dir / "config.yaml").read_bytes() == CONFIG_YAML


async def test_a_new_server_adopts_and_stops_running_agents(
    backend: ProcessBackend, ids: WorkspaceIds, settings: Settings
) -> None:
    ws_id = ids.new()
    started = await backend.start(spec_for(ws_id))
    await wait_for_reply(started.url)
    pid = agent_pid(backend, ws_id)

    restarted = ProcessBackend(settings)  # a fresh server process knows nothing but the pidfile
    assert await restarted.is_running(ws_id) is True
    assert [(i.workspace_id, i.running) for i in await restarted.list_instances()] == [(ws_id, True)]
    await restarted.stop(ws_id)

    async def gone() -> bool:
        backend._procs[ws_id].poll()  # reap it: the first backend is its parent
        return not await restarted.is_running(ws_id) and not psutil.pid_exists(pid)

    await wait_until(gone, "the adopted agent to stop")


async def test_remove_volumes_deletes_the_config_dir(
    backend: ProcessBackend, ids: WorkspaceIds, settings: Settings
) -> None:
    ws_id = ids.new()
    await backend.start(spec_for(ws_id))
    root = Path(settings.DATA_DIR).resolve() / "workspaces" / ws_id
    assert (root / "configs").is_dir()
    await backend.stop(ws_id)
    await backend.remove_volumes(ws_id)
    assert not (root / "configs").exists()
    assert (root / "workspace").is_dir()  # user data kept unless asked
    await backend.remove_volumes(ws_id, workspace=True)
    assert not root.exists()


async def test_exec_session_and_files(backend: ProcessBackend, ids: WorkspaceIds, settings: Settings) -> None:
    ws_id = ids.new()
    await backend.start(spec_for(ws_id))
    workdir = Path(settings.DATA_DIR).resolve() / "workspaces" / ws_id / "workspace"

    res = await backend.exec(ws_id, ["sh", "-c", "pwd; echo err >&2; exit 3"])
    assert (res.exit_code, res.stdout, res.stderr) == (3, f"{workdir}\n".encode(), b"err\n")
    missing = await backend.exec(ws_id, ["definitely-not-a-command-xyz"])
    assert missing.exit_code == 127
    await check_tty_and_session(backend, ws_id)

    await backend.write_config_files(ws_id, {"skills/new/SKILL.md": b"# new\n", ".auth_token": b"t2"})
    config_dir = workdir.parent / "configs"
    assert (config_dir / "skills" / "new" / "SKILL.md").read_bytes() == b"# new\n"
    assert stat.S_IMODE((config_dir / ".auth_token").stat().st_mode) == 0o600
    with pytest.raises(BackendError):
        await backend.write_config_files(ws_id, {"../escape": b"x"})

    await check_not_running_refused(backend)


async def test_workspace_bind_is_the_cwd(backend: ProcessBackend, ids: WorkspaceIds, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    ws_id = ids.new()
    await backend.start(spec_for(ws_id, workspace_path=str(project), workspace_access="read_write"))
    assert (await backend.exec(ws_id, ["pwd"])).stdout == f"{project}\n".encode()
    await backend.stop(ws_id)
    await backend.remove_volumes(ws_id, workspace=True)
    assert project.is_dir()  # a bound host dir is never removed
