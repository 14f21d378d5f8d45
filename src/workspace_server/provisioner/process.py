"""The process backend: the embedded default when no Docker engine answers (DESIGN §6).

Each workspace's agent is `python -m molecule_agent`, run with the server's own interpreter as a
subprocess in its own session (process group) on a free loopback port. On the host it uses:

    <DATA_DIR>/workspaces/<id>/configs/     the agent's /configs (config.yaml, 0600 .auth_token)
    <DATA_DIR>/workspaces/<id>/workspace/   its /workspace and cwd (or the bound workspace_dir)
    <DATA_DIR>/workspaces/<id>/agent.log    stdout+stderr (the previous run's kept as agent.log.1)
    <DATA_DIR>/workspaces/<id>/agent.pid    {"pid","create_time","port"}: lets a restarted server find,
                                            check and stop agents it started before (like containers)

Whatever the image or runtime, the reference agent runs: there is no isolation here (no image, tier
limits or read-only /workspace) — it is for a single operator's machine. The env of the server is not
inherited (it holds ADMIN_TOKEN, DATABASE_URL, …), and user env may not set loader/interpreter hooks
(`LD_*`, `PYTHON*`, …), which on this backend would run code inside the server's own account.
What it asks of the OS itself (pty sessions, process groups, log tails) is in process_os.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import anyio.to_thread
import psutil

import molecule_agent
from workspace_server.chatfiles.fs import WorkspaceFS, host_fs
from workspace_server.config import Settings
from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MAX_EXEC_OUTPUT,
    TOKEN_FILE,
    BackendError,
    ExecResult,
    FileEntry,
    FileTooLargeError,
    ImageUser,
    Instance,
    InstanceNotRunning,
    InvalidPath,
    LiveConfig,
    Started,
    StartSpec,
    build_env,
    free_loopback_port,
    gather_config_files,
    id12,
    instance_name,
    split_workspace_path,
    validate_workspace_mount,
)
from workspace_server.provisioner.process_os import (
    BASE_PATH,
    ProcessExecSession,
    kill_group,
    read_capped,
    remove_all,
    spawn_on_pty,
    tail_bytes,
)
from workspace_server.workspaces.files import (
    FileTooLarge,
    UnsafePath,
    list_tree,
    read_file,
    read_regular,
    remove_path,
    workspace_config_dir,
    write_tree,
)

log = logging.getLogger(__name__)

AGENT_SRC = str(Path(molecule_agent.__file__).resolve().parent.parent)
_UNSAFE_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "PERL5", "RUBY")
_UNSAFE_ENV_NAMES = ("PATH", "HOME", "IFS", "SHELLOPTS", "BASH_ENV", "ENV", "NODE_OPTIONS")


def is_unsafe_env(name: str) -> bool:
    """Env names that would inject code into a host process (the agent or an exec)."""
    upper = name.upper()
    return upper.startswith(_UNSAFE_ENV_PREFIXES) or upper in _UNSAFE_ENV_NAMES


class ProcessBackend:
    name = "process"
    pulls_images = False  # it runs the reference agent whatever the image: nothing to refresh

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}

    # ---- paths ----
    def _config_dir(self, ws_id: str) -> Path:
        try:
            return workspace_config_dir(self.settings, ws_id)
        except UnsafePath as exc:
            raise BackendError("invalid workspace id") from exc

    def _root(self, ws_id: str) -> Path:
        return self._config_dir(ws_id).parent

    def _pidfile(self, ws_id: str) -> Path:
        return self._root(ws_id) / "agent.pid"

    def _logfile(self, ws_id: str) -> Path:
        return self._root(ws_id) / "agent.log"

    def _workspace_dir(self, ws_id: str, bind: str | None = None) -> Path:
        return Path(bind) if bind else self._root(ws_id) / "workspace"

    # ---- start ----
    async def start(self, spec: StartSpec) -> Started:
        bind = validate_workspace_mount(spec.workspace_path, spec.workspace_access)
        files = gather_config_files(spec)
        await self.stop(spec.workspace_id)
        config_dir = self._config_dir(spec.workspace_id)
        workdir = self._workspace_dir(spec.workspace_id, bind)
        try:
            await anyio.to_thread.run_sync(self._prepare_dirs, config_dir, workdir, files)
        except (OSError, UnsafePath) as exc:
            log.warning("preparing %s failed: %s", config_dir, exc)
            raise BackendError("workspace start failed", str(exc)) from exc
        port = free_loopback_port(set(self._ports.values()))
        env = self._agent_env(spec, config_dir, workdir, port)
        try:
            proc = await anyio.to_thread.run_sync(self._spawn, spec.workspace_id, workdir, env)
        except OSError as exc:
            log.warning("spawning the agent for %s failed: %s", spec.workspace_id, exc)
            raise BackendError("workspace start failed", str(exc)) from exc
        self._procs[spec.workspace_id] = proc
        self._ports[spec.workspace_id] = port
        self._write_pidfile(spec.workspace_id, proc.pid, port)
        return Started(url=f"http://127.0.0.1:{port}", instance_id=f"pid:{proc.pid}")

    def _prepare_dirs(self, config_dir: Path, workdir: Path, files: dict[str, bytes]) -> None:
        config_dir.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_files(config_dir, files)

    @staticmethod
    def _write_files(config_dir: Path, files: Mapping[str, bytes]) -> None:
        plain = {k: v for k, v in files.items() if k != TOKEN_FILE}
        if plain:
            write_tree(config_dir, plain)
        if TOKEN_FILE in files:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            fd = os.open(config_dir / TOKEN_FILE, flags, 0o600)
            try:
                os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
                os.write(fd, files[TOKEN_FILE])
            finally:
                os.close(fd)

    def _agent_env(self, spec: StartSpec, config_dir: Path, workdir: Path, port: int) -> dict[str, str]:
        dropped = sorted(k for k in spec.env if is_unsafe_env(k))
        if dropped:
            log.warning("workspace %s: env %s not passed to a host process", spec.workspace_id, dropped)
        safe = dataclasses.replace(spec, env={k: v for k, v in spec.env.items() if not is_unsafe_env(k)})
        extra = {
            "A2A_PORT": str(port),
            "A2A_HOST": "127.0.0.1",
            "MOLECULE_AGENT_URL": f"http://localhost:{port}",
            "PYTHONPATH": AGENT_SRC,
            "PYTHONUNBUFFERED": "1",
            "PATH": BASE_PATH,
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
        }
        return build_env(safe, str(config_dir), extra)

    def _spawn(self, ws_id: str, workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        logfile = self._logfile(ws_id)
        with contextlib.suppress(FileNotFoundError):
            logfile.replace(logfile.with_name("agent.log.1"))
        with open(logfile, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "molecule_agent"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop kills the agent and its children
                close_fds=True,
            )

    def _write_pidfile(self, ws_id: str, pid: int, port: int) -> None:
        try:
            created = psutil.Process(pid).create_time()
        except psutil.Error:
            created = 0.0
        record = {"pid": pid, "create_time": created, "port": port}
        with contextlib.suppress(OSError):
            self._pidfile(ws_id).write_text(json.dumps(record), encoding="utf-8")

    # ---- finding the agent ----
    def _adopted(self, ws_id: str) -> psutil.Process | None:
        """The agent a previous server run started, if its pidfile still names a live process of ours."""
        try:
            record = json.loads(self._pidfile(ws_id).read_text(encoding="utf-8"))
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["create_time"])) > 1.0:
                return None  # the pid was reused
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if "molecule_agent" not in " ".join(proc.cmdline()):
                return None
            return proc
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return None

    def _alive(self, ws_id: str) -> bool:
        proc = self._procs.get(ws_id)
        if proc is not None:
            return proc.poll() is None
        return self._adopted(ws_id) is not None

    # ---- stop / state ----
    async def stop(self, ws_id: str) -> None:
        self._config_dir(ws_id)  # validates the id
        proc = self._procs.pop(ws_id, None)
        self._ports.pop(ws_id, None)
        pid: int | None = None
        if proc is not None and proc.poll() is None:
            pid = proc.pid
        elif proc is None and (adopted := self._adopted(ws_id)) is not None:
            pid = adopted.pid
        if pid is not None:
            await anyio.to_thread.run_sync(kill_group, pid, proc)
        elif proc is not None:
            proc.wait()  # already exited: reap it
        with contextlib.suppress(OSError):
            self._pidfile(ws_id).unlink()

    async def is_running(self, ws_id: str) -> bool:
        try:
            return self._alive(ws_id)
        except BackendError:
            return False

    # ---- exec / terminal / logs / files ----
    def _exec_env(self, ws_id: str, workdir: Path) -> dict[str, str]:
        return {
            "PATH": BASE_PATH,
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "WORKSPACE_ID": ws_id,
            "WORKSPACE_CONFIG_PATH": str(self._config_dir(ws_id)),
        }

    def _running_workdir(self, ws_id: str) -> Path:
        """The agent's cwd (its workspace dir); InstanceNotRunning when it is not running."""
        if not self._alive(ws_id):
            raise InstanceNotRunning
        proc = self._procs.get(ws_id)
        pid = proc.pid if proc is not None else getattr(self._adopted(ws_id), "pid", None)
        try:
            return Path(psutil.Process(pid).cwd())
        except (psutil.Error, TypeError, ValueError):
            return self._workspace_dir(ws_id)

    async def exec(self, ws_id: str, argv: list[str], tty: bool = False) -> ExecResult:
        if not argv:
            raise BackendError("empty command")
        if tty:
            return await self._exec_tty(ws_id, argv)
        workdir = self._running_workdir(ws_id)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=workdir,
                env=self._exec_env(ws_id, workdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:  # like `docker exec` of a missing binary
            return ExecResult(127, b"", f"{argv[0]}: {exc.strerror or 'cannot run'}".encode())
        try:
            assert proc.stdout is not None and proc.stderr is not None
            (out, t1), (err, t2) = await asyncio.gather(read_capped(proc.stdout), read_capped(proc.stderr))
            code = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: do not leave the command running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        return ExecResult(code, out, err, t1 or t2)

    async def _exec_tty(self, ws_id: str, argv: list[str]) -> ExecResult:
        session = await self.open_session(ws_id, argv)
        out, truncated = bytearray(), False
        try:
            while chunk := await session.read(65536):
                room = MAX_EXEC_OUTPUT - len(out)
                truncated = truncated or len(chunk) > room
                out += chunk[: max(room, 0)]
            code = await session.wait()
        finally:
            await session.close()
        return ExecResult(code, bytes(out), b"", truncated)

    async def open_session(self, ws_id: str, argv: list[str]) -> ProcessExecSession:
        if not argv:
            raise BackendError("empty command")
        workdir = self._running_workdir(ws_id)
        env = self._exec_env(ws_id, workdir)
        try:
            proc, master = await anyio.to_thread.run_sync(spawn_on_pty, argv, workdir, env)
        except OSError as exc:
            raise BackendError("failed to create shell session", str(exc)) from exc
        return ProcessExecSession(proc, master)

    async def logs(self, ws_id: str, tail: int = 200) -> str:
        path = self._logfile(ws_id)
        try:
            data = await anyio.to_thread.run_sync(tail_bytes, path, max(1, tail))
        except FileNotFoundError as exc:
            raise InstanceNotRunning from exc
        except OSError as exc:
            raise BackendError("could not read logs", str(exc)) from exc
        return data.decode("utf-8", "replace")

    async def write_config_files(self, ws_id: str, files: Mapping[str, bytes]) -> None:
        config_dir = self._config_dir(ws_id)

        def write() -> None:
            config_dir.mkdir(parents=True, exist_ok=True)
            self._write_files(config_dir, files)

        try:
            await anyio.to_thread.run_sync(write)
        except UnsafePath as exc:
            raise InvalidPath(str(exc), "invalid config file path") from exc
        except OSError as exc:
            raise BackendError("could not write config files", str(exc)) from exc

    # ---- files API (spec 02 §7): host directories, walked without following symlinks ----
    def _files_root(self, ws_id: str, root: str) -> Path | None:
        """The host dir behind an in-workspace root; InstanceNotRunning when there is none to use.

        /configs is the config dir whether or not the agent runs (it is the "volume"); /workspace is the
        running agent's cwd; /home and /plugins do not exist on this backend (None while it runs).
        """
        if root == CONFIG_MOUNT:
            return self._config_root(ws_id)
        workdir = self._running_workdir(ws_id)  # InstanceNotRunning when the agent is not running
        return workdir if root == "/workspace" else None

    def _config_root(self, ws_id: str) -> Path:
        config_dir = self._config_dir(ws_id)
        if not config_dir.is_dir():
            raise InstanceNotRunning
        return config_dir

    async def list_files(
        self, ws_id: str, directory: str, depth: int, *, helper_image: str = ""
    ) -> list[FileEntry]:
        root, rest = split_workspace_path(directory)
        host = self._files_root(ws_id, root)
        if host is None:
            return []
        rows = await anyio.to_thread.run_sync(list_tree, host, rest, depth)
        return [FileEntry(path, size if not is_dir else 0, is_dir) for path, size, is_dir in rows or []]

    async def read_file(self, ws_id: str, path: str, *, helper_image: str = "") -> bytes | None:
        root, rest = split_workspace_path(path)
        host = self._files_root(ws_id, root)
        if host is None or not rest:
            return None
        try:
            return await anyio.to_thread.run_sync(read_regular, host, rest, MAX_EXEC_OUTPUT)
        except FileTooLarge as exc:
            raise FileTooLargeError from exc

    async def write_files(
        self, ws_id: str, files: Mapping[str, bytes], *, helper_image: str = ""
    ) -> Literal["container", "volume"]:
        await self.write_config_files(ws_id, files)
        return "container" if await self.is_running(ws_id) else "volume"

    async def delete_path(self, ws_id: str, rel: str, *, helper_image: str = "") -> None:
        config_dir = self._config_root(ws_id)
        try:
            await anyio.to_thread.run_sync(remove_path, config_dir, rel)
        except UnsafePath as exc:
            raise InvalidPath(str(exc)) from exc
        except OSError as exc:
            raise BackendError("delete failed", str(exc)) from exc

    # ---- volumes / inventory ----
    async def remove_volumes(self, ws_id: str, workspace: bool = False) -> None:
        """The config dir and logs; the workspace dir only if asked (a bound host dir never)."""
        root = self._root(ws_id)
        targets = [self._config_dir(ws_id)] + ([root / "workspace"] if workspace else [])
        try:
            await anyio.to_thread.run_sync(remove_all, root, targets)
        except OSError as exc:
            raise BackendError("could not remove workspace files", str(exc)) from exc

    async def list_instances(self) -> list[Instance]:
        return await anyio.to_thread.run_sync(self._list_instances)

    def _list_instances(self) -> list[Instance]:
        base = Path(self.settings.DATA_DIR).resolve() / "workspaces"
        out: list[Instance] = []
        for pidfile in sorted(base.glob("*/agent.pid")):
            ws_id = pidfile.parent.name
            try:
                running = self._alive(ws_id)
            except BackendError:
                continue
            out.append(Instance(instance_name(ws_id), ws_id, id12(ws_id), running))
        return out

    async def instance_url(self, ws_id: str) -> str | None:
        """None: agents are adopted by their pidfiles (`_adopted`), not by a url read back."""
        return None

    # ---- addresses: agents are local processes on loopback ----
    def shares_host_network(self, tier: int) -> bool:
        return True

    def network_url(self, ws_id: str, url: str, tier: int) -> str:
        return url

    def dial_url(self, ws_id: str, url: str) -> str:
        return url

    # ---- what the orchestrator and the chat routes read ----
    async def read_live_config(self, ws_id: str) -> LiveConfig:
        """The config dir is the volume: readable whether or not the agent runs."""
        try:
            root = workspace_config_dir(self.settings, ws_id)
        except UnsafePath:
            return LiveConfig(False, None)
        data = await asyncio.to_thread(read_file, root, "config.yaml")
        return LiveConfig(True, data)

    async def chat_files(self, ws_id: str, workspace_dir: str, workspace_access: str) -> WorkspaceFS:
        return host_fs(self.settings, ws_id, workspace_dir, workspace_access)

    # ---- images: none (pulls_images is False, so these are never called) ----
    async def pull_image(self, ref: str, auth: dict[str, str] | None) -> None:
        raise BackendError("the process backend has no images")

    async def image_users(self) -> list[ImageUser]:
        return []

    # ---- warm pool: none (an agent process starts in well under the pool's gain) ----
    async def run_warm_pool(self) -> None:
        return None

    async def drain_warm_pool(self, image: str) -> None:
        return None

    async def close(self) -> None:
        """Agents keep running (like containers); the next server run adopts them via their pidfiles."""
        for proc in self._procs.values():
            proc.poll()
