"""The Docker backend (spec 02 §2) on the official docker SDK, called from worker threads.

One container per workspace, `ws-<id12>`, labelled `molecule.platform.managed=true` (and with the full
workspace id, so the orphan sweeper needs no prefix match). Volumes: `ws-<id12>-configs` at /configs,
`ws-<id>-workspace` (or a host bind) at /workspace, `ws-<id12>-claude-sessions` for claude-code.

Networking — the agent must advertise a URL that passes the platform's register check
(`http://localhost:<port>`), so it must know its host port before it starts. We pick a free loopback
port ourselves and:
- bridge mode: publish the container's 8000/tcp on `127.0.0.1:<port>`;
- host mode (tests, and T4 when privileged tiers are allowed): run on the host network with
  `A2A_PORT=<port>` and `A2A_HOST=127.0.0.1`, so agents do not collide on 8000.
Either way the URL returned to the orchestrator is `http://127.0.0.1:<port>`.

Config files. With a local engine (no DOCKER_HOST, or a unix socket) and a root server, the configs
volume keeps its name and labels but is a `local` volume bound to the host directory
`<DATA_DIR>/workspaces/<id>/configs`, and the files are written there directly, owned by the image user
(uid 1000 in our image) so the agent can read its 0600 `.auth_token` and write to /configs. That skips
`put_archive`, which mounts the created container's filesystem and was the largest share of a start
(docs/decisions.md "Provision latency"). The first such start of a backend checks, through the engine,
that the engine sees what we wrote (a server in a container with the host's socket does not); if it does
not, the backend goes back to engine-managed volumes for good. Everywhere else (remote engines, a
non-root server, volumes made before) the files go in with `put_archive` into the created-but-not-started
container, so no helper image (the reference's `alpine`) is needed; entries carry the same uid/gid.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import io
import logging
import os
import platform as host_platform
import re
import secrets
import shutil
import socket
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import docker
import docker.errors
import docker.models.containers
import requests

from workspace_server.config import Settings
from workspace_server.provisioner import images
from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MANAGED_LABEL,
    MAX_EXEC_OUTPUT,
    TOKEN_FILE,
    WORKSPACE_LABEL,
    BackendError,
    EngineUnavailable,
    ExecResult,
    ExecSession,
    FileEntry,
    FileTooLargeError,
    Instance,
    InstanceNotRunning,
    InvalidPath,
    PullProgress,
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
from workspace_server.provisioner.tiers import DOCKER_SOCK, TierLimits, tier_limits
from workspace_server.workspaces.files import (
    SKIP_NAMES,
    UnsafePath,
    check_tree,
    split_relpath,
    workspace_config_dir,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
AGENT_PORT = 8000
SESSIONS_MOUNT = "/root/.claude/sessions"
PORT_CONFLICT = ("port is already allocated", "address already in use")
ENGINE_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)
_HEX_DASH = re.compile(r"^[0-9a-f-]+$")
PROBE_OWNER = 4242  # uid/gid of the marker file that shows whether the engine sees our host dirs


def configs_volume(ws_id: str) -> str:
    return f"ws-{id12(ws_id)}-configs"


def sessions_volume(ws_id: str) -> str:
    return f"ws-{id12(ws_id)}-claude-sessions"


def workspace_volume(ws_id: str) -> str:
    return f"ws-{ws_id}-workspace"


def is_not_found_error(msg: str) -> bool:
    """Spec 02 §8 truth table: "No such container" / "container not found" mean gone; nothing else does."""
    low = msg.lower()
    return "no such container" in low or "container not found" in low


def make_client(settings: Settings, timeout: int = 120) -> docker.DockerClient:
    return docker.DockerClient(
        base_url=settings.DOCKER_HOST or "unix:///var/run/docker.sock", timeout=timeout
    )


def config_tar(files: Mapping[str, bytes], uid: int, gid: int, prefix: str = "") -> bytes:
    """A tar of `files` (relpath → bytes) under `prefix`, owned by uid:gid; the token file 0600.

    Every directory gets its own entry so it is owned by the agent user too; with a prefix
    (`configs/`) the volume root itself is included. Unsafe names raise UnsafePath.
    """
    buf = io.BytesIO()
    now = time.time()
    dirs: set[str] = set()

    def add_dir(name: str) -> None:
        if name in dirs:
            return
        dirs.add(name)
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o755, uid, gid, now
        tar.addfile(info)

    with tarfile.open(fileobj=buf, mode="w") as tar:
        if prefix:
            add_dir(prefix.rstrip("/"))
        for rel, data in files.items():
            parts = split_relpath(rel)
            for i in range(1, len(parts)):
                add_dir(prefix + "/".join(parts[:i]))
            info = tarfile.TarInfo(prefix + "/".join(parts))
            info.size, info.uid, info.gid, info.mtime = len(data), uid, gid, now
            info.mode = 0o600 if rel == TOKEN_FILE else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def parse_user(user: str, passwd: str = "") -> tuple[int, int]:
    """uid/gid of an image's `User` (`1000`, `1000:1000`, `agent`); root when empty or unresolvable."""
    name, _, group = user.strip().partition(":")
    if not name:
        return 0, 0
    uid = int(name) if name.isdigit() else None
    gid = int(group) if group.isdigit() else None
    if uid is None:
        for line in passwd.splitlines():
            f = line.split(":")
            if len(f) >= 4 and f[0] == name and f[2].isdigit() and f[3].isdigit():
                uid, gid = int(f[2]), gid if gid is not None else int(f[3])
                break
    if uid is None:
        return 0, 0
    return uid, gid if gid is not None else uid


def is_local_engine(settings: Settings) -> bool:
    """The engine runs on this host's filesystem as far as we can tell from its address (a unix socket)."""
    host = settings.DOCKER_HOST.strip()
    return not host or host.startswith("unix://")


def write_host_configs(root: Path, files: Mapping[str, bytes], uid: int, gid: int) -> None:
    """Write `files` (relpath → bytes) under `root`, the host dir behind a configs volume, as uid:gid.

    Same result as extracting `config_tar` there: root and every directory 0755, files 0644, the token
    0600, all owned by the agent user; other files are left alone. The agent can plant symlinks, FIFOs or
    odd directories in `root`, so nothing here follows a symlink: directories are entered by fd with
    O_NOFOLLOW (a non-directory in the way is removed, as the engine's tar extraction does), and each file
    is written to a fresh temp file and renamed over its name, which replaces a symlink instead of writing
    through it. Raises UnsafePath for bad names and OSError for I/O errors.
    """
    check_tree(list(files))
    root.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(root_fd, uid, gid)
        os.fchmod(root_fd, 0o755)
        for rel, data in files.items():
            mode = 0o600 if rel == TOKEN_FILE else 0o644
            _write_host_file(root_fd, split_relpath(rel), data, uid, gid, mode)
    finally:
        os.close(root_fd)


def _write_host_file(root_fd: int, parts: list[str], data: bytes, uid: int, gid: int, mode: int) -> None:
    fds: list[int] = []
    try:
        dir_fd = root_fd
        for name in parts[:-1]:
            dir_fd = _enter_dir(dir_fd, name, uid, gid)
            fds.append(dir_fd)
        _replace_file(dir_fd, parts[-1], data, uid, gid, mode)
    finally:
        for fd in fds:
            os.close(fd)


def _enter_dir(parent_fd: int, name: str, uid: int, gid: int) -> int:
    """An fd for the real directory `name` under parent_fd (made, or put in place of a non-directory)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    try:
        fd = os.open(name, flags, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        os.unlink(name, dir_fd=parent_fd)  # a symlink or file where the directory goes
        os.mkdir(name, 0o755, dir_fd=parent_fd)
        fd = os.open(name, flags, dir_fd=parent_fd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o755)
    except OSError:
        os.close(fd)
        raise
    return fd


def _replace_file(dir_fd: int, name: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    tmp = f".molecule-tmp-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    try:
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)  # the umask may have narrowed it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):  # a directory in the way: the engine's extraction replaces it too
                shutil.rmtree(name, dir_fd=dir_fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _probe_matches(archive: bytes, content: bytes) -> bool:
    """The engine's tar of the marker holds our bytes with our owner: it sees our host dir as we do."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            return False
        f = tar.extractfile(member)
        seen = f.read() if f is not None else b""
    return seen == content and (member.uid, member.gid) == (PROBE_OWNER, PROBE_OWNER)


@dataclass(frozen=True)
class _Prepared:
    """What the overlapped engine calls before a create found out."""

    image_id: str
    user: str  # the image's `User`
    owner: tuple[int, int] | None  # its uid/gid; None: a user name, to look up in the container
    host_dir: Path | None  # the configs volume is bound to this host dir and we write there


class DockerBackend:
    name = "docker"

    def __init__(self, settings: Settings, client: docker.DockerClient | None = None) -> None:
        self.settings = settings
        self.client = client or make_client(settings)
        self._lock = threading.Lock()
        self._ports: dict[str, int] = {}  # ws_id -> host port we assigned (never hand one out twice)
        self._network_ready = False
        self._engine_cpus: int | None = None
        # host-dir configs volumes: local engine + root (to hand files to the agent's uid); None = the
        # engine's view of our dirs is not checked yet, False = it does not see them (never try again)
        self._host_volumes = is_local_engine(settings) and os.geteuid() == 0
        self._host_verified: bool | None = None
        self._owners: dict[str, tuple[int, int]] = {}  # image id -> uid/gid of a named image user
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker-prep")

    # ---- plumbing ----
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args)

    def _platform(self) -> str | None:
        forced = self.settings.MOLECULE_IMAGE_PLATFORM
        if forced is not None:
            return forced.strip() or None
        if host_platform.system() == "Darwin" and host_platform.machine() in ("arm64", "aarch64"):
            return "linux/amd64"
        return None

    def _reserve_port(self, ws_id: str) -> int:
        with self._lock:
            port = free_loopback_port(set(self._ports.values()))
            self._ports[ws_id] = port
            return port

    def _release_port(self, ws_id: str) -> None:
        with self._lock:
            self._ports.pop(ws_id, None)

    # ---- start ----
    async def start(self, spec: StartSpec) -> Started:
        cb = spec.on_pull_progress

        def report(ev: PullProgress) -> None:
            if cb is None:
                return
            try:
                anyio.from_thread.run_sync(cb, ev)
            except Exception:  # a broken progress sink must not fail the start
                log.exception("pull progress callback failed")

        return await self._run(self._start_sync, spec, report)

    def _start_sync(self, spec: StartSpec, report: images.Report) -> Started:
        if not spec.image.strip():
            raise BackendError("no image for the workspace runtime")
        limits = tier_limits(self.settings, spec.tier)
        bind_path = validate_workspace_mount(spec.workspace_path, spec.workspace_access)
        files = gather_config_files(spec)
        name = instance_name(spec.workspace_id)
        try:
            prep = self._prepare(spec, report)
            attempt = 0
            while attempt < 3:
                port = self._reserve_port(spec.workspace_id)
                try:
                    container_id = self._create_and_start(spec, limits, bind_path, files, port, prep)
                except _PortConflict:
                    attempt += 1
                    log.info("host port %d was taken, retrying (%d)", port, attempt)
                    continue
                except _HostDirUnseen:
                    self._use_engine_volume(spec.workspace_id)
                    prep = replace(prep, host_dir=None)
                    continue
                return Started(url=f"http://127.0.0.1:{port}", instance_id=container_id)
            raise BackendError("workspace start failed", "no free host port after 3 attempts")
        except BackendError:
            self._start_failed(spec.workspace_id)
            raise
        except ENGINE_ERRORS as exc:
            self._start_failed(spec.workspace_id)
            log.warning("start of %s failed: %s", name, exc)
            if images.is_image_not_found_error(str(exc)):
                raise images.ImageNotFound(spec.image, str(exc)) from exc
            if _engine_unreachable(exc):
                raise EngineUnavailable("workspace start failed", str(exc)) from exc
            raise BackendError("workspace start failed", str(exc)) from exc

    def _start_failed(self, ws_id: str) -> None:
        """A failed start leaves nothing running, not even a container it did not get to replace."""
        self._release_port(ws_id)
        try:
            self._force_remove(instance_name(ws_id))
        except ENGINE_ERRORS as exc:
            log.warning("removing %s after a failed start failed: %s", instance_name(ws_id), exc)

    def _prepare(self, spec: StartSpec, report: images.Report) -> _Prepared:
        """The engine calls a create depends on, overlapped (they are independent of each other).

        A previous container is not looked for here: the create meets it as a name conflict (rare, as
        the orchestrator stops before it starts) and removes it then.
        """
        jobs: list[concurrent.futures.Future[Any]] = [
            self._pool.submit(self._configs_volume, spec.workspace_id)
        ]
        if spec.runtime == "claude-code":
            jobs.append(self._pool.submit(self._sessions_volume, spec))
        if self._engine_cpus is None:
            jobs.append(self._pool.submit(self._cpu_cap))
        try:
            # here, not in the pool: the pull progress callback must run on an anyio worker thread
            attrs = self._image_attrs(spec.image, report)
        finally:
            concurrent.futures.wait(jobs)
        for job in jobs:
            job.result()
        bound: Path | None = jobs[0].result()
        host_dir = None
        if bound is not None and self._host_verified is False:
            # bound by an earlier run, but this engine cannot mount it: replace it (after its old user)
            self._force_remove(instance_name(spec.workspace_id))
            self._use_engine_volume(spec.workspace_id)
        elif bound is not None and self._host_volumes:
            host_dir = bound
        image_id = str(attrs.get("Id") or "")
        user = str((attrs.get("Config") or {}).get("User") or "")
        return _Prepared(image_id, user, self._image_owner(image_id, user), host_dir)

    def _image_attrs(self, ref: str, report: images.Report) -> dict[str, Any]:
        """The image's inspect; pulled first (images.ensure_image) when the pull policy says so.

        One inspect answers both "present, and must it be pulled?" and "which user and id?" on the
        common path; only a pull inspects again.
        """
        try:
            attrs: dict[str, Any] | None = self.client.api.inspect_image(ref)
        except docker.errors.NotFound:  # ImageNotFound is a subclass
            attrs = None
        if attrs is not None:
            from_registry = images.came_from_registry(ref, attrs.get("RepoDigests") or [])
            if not images.should_pull(ref, True, from_registry):
                return attrs
        images.ensure_image(self.client, ref, self._platform(), report)
        return dict(self.client.api.inspect_image(ref))

    def _sessions_volume(self, spec: StartSpec) -> None:
        """claude-code's sessions volume; a reset removes it first (after the container that uses it)."""
        reset = spec.reset_session or _truthy(spec.env.get("WORKSPACE_RESET_SESSION", ""))
        if reset:
            self._force_remove(instance_name(spec.workspace_id))
            self._remove_volume(sessions_volume(spec.workspace_id), strict=False)
        self.client.volumes.create(sessions_volume(spec.workspace_id), labels=_labels(spec.workspace_id))

    def _own_dir(self, ws_id: str) -> Path | None:
        try:
            return workspace_config_dir(self.settings, ws_id)
        except UnsafePath:  # not a UUID: engine-managed volume only
            return None

    def _configs_volume(self, ws_id: str) -> Path | None:
        """Create (or find) the configs volume; our host dir when the volume is bound to it."""
        own = self._own_dir(ws_id)
        opts = None
        if own is not None and self._host_volumes and self._host_verified is not False:
            opts = {"type": "none", "o": "bind", "device": str(own)}
        # an existing volume is returned as it is (its options are not changed): a volume made by an
        # older server, or on a remote engine, stays engine-managed and gets put_archive
        info = self.client.api.create_volume(configs_volume(ws_id), driver_opts=opts, labels=_labels(ws_id))
        bound = own is not None and (info.get("Options") or {}).get("device") == str(own)
        return own if bound else None

    def _use_engine_volume(self, ws_id: str) -> None:
        """Replace a host-bound configs volume the engine cannot see with an engine-managed one."""
        self._remove_volume(configs_volume(ws_id), strict=True)
        self.client.volumes.create(configs_volume(ws_id), labels=_labels(ws_id))

    def _network_kwargs(self, limits: TierLimits, port: int) -> tuple[dict[str, Any], dict[str, str]]:
        """(create kwargs, env extras) for the network mode."""
        url = f"http://localhost:{port}"
        if self.settings.docker_host_network or limits.host_network:
            extra = {"A2A_PORT": str(port), "A2A_HOST": "127.0.0.1", "MOLECULE_AGENT_URL": url}
            return {"network_mode": "host"}, extra
        kw: dict[str, Any] = {
            "ports": {f"{AGENT_PORT}/tcp": ("127.0.0.1", port)},
            "extra_hosts": {"host.docker.internal": "host-gateway"},
        }
        network = self._ensure_network()
        if network:
            kw["network"] = network
        return kw, {"A2A_PORT": str(AGENT_PORT), "MOLECULE_AGENT_URL": url}

    def _ensure_network(self) -> str:
        name = self.settings.DOCKER_NETWORK
        if not name or self._network_ready:
            return name
        try:
            self.client.networks.get(name)
        except docker.errors.NotFound:
            with contextlib.suppress(docker.errors.APIError):  # a concurrent create won the race
                self.client.networks.create(name, driver="bridge", labels={MANAGED_LABEL: "true"})
        self._network_ready = True
        return name

    def _volumes(self, spec: StartSpec, limits: TierLimits, bind_path: str | None) -> dict[str, Any]:
        vols: dict[str, Any] = {configs_volume(spec.workspace_id): {"bind": CONFIG_MOUNT, "mode": "rw"}}
        if limits.config_mount_only:
            return vols
        if bind_path is None:
            vols[workspace_volume(spec.workspace_id)] = {"bind": "/workspace", "mode": "rw"}
        else:
            mode = "ro" if spec.workspace_access == "read_only" else "rw"
            vols[bind_path] = {"bind": "/workspace", "mode": mode}
        if spec.runtime == "claude-code":
            vols[sessions_volume(spec.workspace_id)] = {"bind": SESSIONS_MOUNT, "mode": "rw"}
        if limits.docker_socket:
            vols[DOCKER_SOCK] = {"bind": DOCKER_SOCK, "mode": "rw"}
        return vols

    def _create_and_start(
        self,
        spec: StartSpec,
        limits: TierLimits,
        bind_path: str | None,
        files: dict[str, bytes],
        port: int,
        prep: _Prepared,
    ) -> str:
        name = instance_name(spec.workspace_id)
        net_kw, extra = self._network_kwargs(limits, port)
        env = build_env(spec, CONFIG_MOUNT, extra)
        kwargs: dict[str, Any] = {
            "name": name,
            "environment": [f"{k}={v}" for k, v in env.items()],
            "labels": _labels(spec.workspace_id),
            "volumes": self._volumes(spec, limits, bind_path),
            "restart_policy": {"Name": "unless-stopped"},
            "detach": True,
            **net_kw,
            **limits.host_config(),
        }
        # The engine refuses NanoCPUs above its CPU count (T3/T4 on a small host): clamp, do not fail.
        kwargs["nano_cpus"] = min(kwargs["nano_cpus"], self._cpu_cap())
        plat = self._platform()
        if plat:
            kwargs["platform"] = plat
        container = self._create_container(spec.image, kwargs)
        try:
            self._write_initial_files(container, spec, files, limits, prep)
            container.start()
        except docker.errors.APIError as exc:
            self._force_remove(name)
            if any(p in str(exc).lower() for p in PORT_CONFLICT):
                raise _PortConflict from exc
            raise
        except BaseException:
            self._force_remove(name)
            raise
        return str(container.id)

    def _cpu_cap(self) -> int:
        if self._engine_cpus is None:
            try:
                self._engine_cpus = int(self.client.info().get("NCPU") or 0)
            except ENGINE_ERRORS:
                return 1 << 62  # unknown: no clamp this time
        return self._engine_cpus * 1_000_000_000 if self._engine_cpus > 0 else 1 << 62

    def _create_container(self, image: str, kwargs: dict[str, Any]) -> Any:
        """Create `kwargs["name"]`, replacing a container of that name left from before (start replaces
        whatever runs for the workspace)."""
        try:
            return self._create_once(image, kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: the name is taken
                raise
        self._force_remove(kwargs["name"])
        return self._create_once(image, kwargs)

    def _create_once(self, image: str, kwargs: dict[str, Any]) -> Any:
        """`containers.create` without its follow-up inspect: a model that holds only the id."""
        translate = getattr(docker.models.containers, "_create_container_args", None)
        if translate is None:  # an SDK without the helper: the public call, one round trip more
            return self.client.containers.create(image, **kwargs)
        args = translate({**kwargs, "image": image, "command": None, "version": self.client.api._version})
        resp = self.client.api.create_container(**args)
        return self.client.containers.prepare_model({"Id": resp["Id"]})

    def _image_owner(self, image_id: str, user: str) -> tuple[int, int] | None:
        """uid/gid of the image's user without a container, when it is numeric (or was looked up)."""
        name = user.partition(":")[0]
        if name and not name.isdigit():
            return self._owners.get(image_id)
        return parse_user(user)

    def _owner(self, container: Any, user: str | None = None) -> tuple[int, int]:
        """uid/gid of `user` (default: the container's `User`), names looked up in its /etc/passwd."""
        if user is None:
            user = str((container.attrs.get("Config") or {}).get("User") or "")
        name = user.partition(":")[0]
        passwd = ""
        if name and not name.isdigit():
            passwd = self._read_file(container, "/etc/passwd")
        return parse_user(user, passwd)

    def _read_file(self, container: Any, path: str) -> str:
        try:
            stream, _ = container.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                f = tar.extractfile(member) if member else None
                return f.read().decode("utf-8", "replace") if f else ""
        except (docker.errors.APIError, tarfile.TarError):
            return ""

    def _write_initial_files(
        self,
        container: Any,
        spec: StartSpec,
        files: Mapping[str, bytes],
        limits: TierLimits,
        prep: _Prepared,
    ) -> None:
        if prep.host_dir is None and not files:
            return  # a plain restart: the volume already holds everything
        owner = prep.owner
        if owner is None:  # a named user: its /etc/passwd entry, once per image
            owner = self._owners[prep.image_id] = self._owner(container, prep.user)
        uid, gid = owner
        if prep.host_dir is not None:
            if not self._host_verified:
                self._verify_host_dir(container, prep.host_dir)
            try:
                write_host_configs(prep.host_dir, files, uid, gid)  # also hands the root to the agent
            except UnsafePath as exc:
                raise BackendError("invalid config file path", str(exc)) from exc
            return
        if not limits.read_only_rootfs:
            # Extracting at `/` with a `configs/` entry also hands the volume root to the agent user.
            container.put_archive("/", config_tar(files, uid, gid, prefix=CONFIG_MOUNT.strip("/") + "/"))
            return
        # A read-only rootfs refuses archives outside volumes, and the volume root cannot be chowned
        # from inside: seed the volume through a never-started, writable twin of the container.
        seed = self.client.containers.create(
            spec.image,
            name=f"{instance_name(spec.workspace_id)}-seed-{int(time.time() * 1000)}",
            volumes={configs_volume(spec.workspace_id): {"bind": CONFIG_MOUNT, "mode": "rw"}},
            labels={MANAGED_LABEL: "true", WORKSPACE_LABEL: spec.workspace_id},
            network_mode="none",
        )
        try:
            seed.put_archive("/", config_tar(files, uid, gid, prefix=CONFIG_MOUNT.strip("/") + "/"))
        finally:
            seed.remove(force=True)

    def _verify_host_dir(self, container: Any, host_dir: Path) -> None:
        """Does the engine see our host dir as we do? A marker file read back through it tells.

        A server in a container with the host's docker socket passes a path the engine resolves on the
        host: the mount fails or shows another directory. Checked once per backend (the first start
        pays one archive read); on failure every later start uses engine-managed volumes.
        """
        marker = f".molecule-probe-{secrets.token_hex(8)}"
        content = secrets.token_hex(16).encode()
        host_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(host_dir / marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, PROBE_OWNER, PROBE_OWNER)
            os.write(fd, content)
        finally:
            os.close(fd)
        try:
            data = _get_archive(container, f"{CONFIG_MOUNT}/{marker}", 64 * 1024)
            seen = data is not None and _probe_matches(data, content)
        except (*ENGINE_ERRORS, tarfile.TarError, BackendError) as exc:
            log.info("engine cannot read the host-bound configs volume: %s", exc)
            seen = False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(host_dir / marker)
        if not seen:
            log.warning("the engine does not see %s as we do: using engine-managed config volumes", host_dir)
            self._host_verified = False
            raise _HostDirUnseen
        self._host_verified = True

    # ---- stop / state ----
    def _force_remove(self, name: str) -> None:
        try:
            self.client.api.remove_container(name, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if is_not_found_error(str(exc)):
                return
            raise

    async def stop(self, ws_id: str) -> None:
        name = instance_name(ws_id)
        try:
            await self._run(self._force_remove, name)
        except ENGINE_ERRORS as exc:
            log.warning("force-remove %s failed: %s", name, exc)
            raise BackendError(f"force-remove {name} failed", str(exc)) from exc
        self._release_port(ws_id)

    async def is_running(self, ws_id: str) -> bool:
        name = instance_name(ws_id)
        try:
            info = await self._run(self.client.api.inspect_container, name)
        except docker.errors.NotFound:
            return False
        except ENGINE_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError) and is_not_found_error(str(exc)):
                return False
            # transient (timeout, EOF, daemon restart): True, or callers would restart a live workspace
            log.warning("inspect %s failed, assuming running: %s", name, exc)
            return True
        return bool((info.get("State") or {}).get("Running"))

    async def instance_url(self, ws_id: str) -> str | None:
        """The url `start` returned for the workspace's running container, read back from the engine
        (start-up adoption: the server that started it may have died before recording it); None when no
        running container of ours carries the workspace."""
        try:
            info = await self._run(self.client.api.inspect_container, instance_name(ws_id))
        except docker.errors.NotFound:
            return None
        except ENGINE_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError) and is_not_found_error(str(exc)):
                return None
            raise BackendError("inspect failed", str(exc)) from exc
        config = info.get("Config") or {}
        if (config.get("Labels") or {}).get(WORKSPACE_LABEL) != ws_id:
            return None
        if not (info.get("State") or {}).get("Running"):
            return None
        port = _host_port(info)
        if port is None:
            return None
        with self._lock:  # never hand this port to another start
            self._ports[ws_id] = port
        return f"http://127.0.0.1:{port}"

    def _running_container(self, ws_id: str) -> Any:
        try:
            container = self.client.containers.get(instance_name(ws_id))
        except docker.errors.NotFound as exc:
            raise InstanceNotRunning from exc
        if not (container.attrs.get("State") or {}).get("Running"):
            raise InstanceNotRunning
        return container

    # ---- exec / terminal / logs / files ----
    async def exec(self, ws_id: str, argv: list[str], tty: bool = False) -> ExecResult:
        if not argv:
            raise BackendError("empty command")
        try:
            # abandon_on_cancel: a caller's fail_after releases it; the engine finishes the exec alone
            return await anyio.to_thread.run_sync(self._exec_sync, ws_id, argv, tty, abandon_on_cancel=True)
        except BackendError:
            raise
        except ENGINE_ERRORS as exc:
            log.warning("exec in %s failed: %s", instance_name(ws_id), exc)
            raise BackendError("exec failed", str(exc)) from exc

    def _exec_sync(self, ws_id: str, argv: list[str], tty: bool) -> ExecResult:
        container = self._running_container(ws_id)
        api = self.client.api
        exec_id = api.exec_create(container.id, argv, stdout=True, stderr=True, tty=tty)["Id"]
        out, err, size, truncated = bytearray(), bytearray(), 0, False
        for chunk in api.exec_start(exec_id, stream=True, demux=not tty, tty=tty):
            stdout, stderr = (chunk, None) if tty else chunk
            for buf, data in ((out, stdout), (err, stderr)):
                if not data:
                    continue
                room = MAX_EXEC_OUTPUT - size
                if room <= 0:
                    truncated = True
                    continue
                buf += data[:room]
                size += min(len(data), room)
                truncated = truncated or len(data) > room
        code = api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(int(code if code is not None else -1), bytes(out), bytes(err), truncated)

    async def open_session(self, ws_id: str, argv: list[str]) -> ExecSession:
        if not argv:
            raise BackendError("empty command")
        try:
            return await self._run(self._open_session_sync, ws_id, argv)
        except BackendError:
            raise
        except ENGINE_ERRORS as exc:
            log.warning("exec session in %s failed: %s", instance_name(ws_id), exc)
            raise BackendError("failed to create shell session", str(exc)) from exc

    def _open_session_sync(self, ws_id: str, argv: list[str]) -> DockerExecSession:
        container = self._running_container(ws_id)
        api = self.client.api
        exec_id = api.exec_create(
            container.id, argv, stdin=True, tty=True, environment=["TERM=xterm-256color"]
        )["Id"]
        sock_io = api.exec_start(exec_id, socket=True, tty=True)
        return DockerExecSession(self, exec_id, sock_io)

    async def logs(self, ws_id: str, tail: int = 200) -> str:
        try:
            raw = await self._run(lambda: self.client.api.logs(instance_name(ws_id), tail=max(1, tail)))
        except docker.errors.NotFound as exc:
            raise InstanceNotRunning from exc
        except ENGINE_ERRORS as exc:
            raise BackendError("could not read logs", str(exc)) from exc
        return bytes(raw).decode("utf-8", "replace")

    async def write_config_files(self, ws_id: str, files: Mapping[str, bytes]) -> None:
        try:
            await self._run(self._write_files_sync, ws_id, dict(files))
        except UnsafePath as exc:
            raise BackendError("invalid config file path", str(exc)) from exc
        except BackendError:
            raise
        except ENGINE_ERRORS as exc:
            raise BackendError("could not write config files", str(exc)) from exc

    def _write_files_sync(self, ws_id: str, files: dict[str, bytes]) -> None:
        try:
            container = self.client.containers.get(instance_name(ws_id))
        except docker.errors.NotFound as exc:
            raise InstanceNotRunning from exc
        uid, gid = self._owner(container)
        # Into the volume itself: works on a read-only rootfs and leaves the root's owner alone.
        container.put_archive(CONFIG_MOUNT, config_tar(files, uid, gid))

    # ---- volumes / inventory ----
    def _remove_volume(self, name: str, strict: bool) -> None:
        try:
            self.client.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            return
        except ENGINE_ERRORS as exc:
            if strict:
                raise
            log.warning("removing volume %s failed: %s", name, exc)

    async def remove_volumes(self, ws_id: str, workspace: bool = False) -> None:
        """Configs volume and its host dir (errors raised), sessions volume (best effort), workspace
        volume only if asked. The host dir goes only once the volume is gone (never under a live mount)."""
        try:
            await self._run(self._remove_volume, configs_volume(ws_id), True)
        except ENGINE_ERRORS as exc:
            raise BackendError(f"could not remove volume {configs_volume(ws_id)}", str(exc)) from exc
        await self._run(self._remove_volume, sessions_volume(ws_id), False)
        if workspace:
            await self._run(self._remove_volume, workspace_volume(ws_id), False)
        try:
            await self._run(self._remove_host_dir, ws_id)
        except OSError as exc:
            raise BackendError("could not remove workspace config files", str(exc)) from exc

    def _remove_host_dir(self, ws_id: str) -> None:
        own = self._own_dir(ws_id)
        if own is None or own.is_symlink() or not own.is_dir():
            return
        shutil.rmtree(own)  # fd-based on Linux: a symlink planted by the agent is removed, not followed
        with contextlib.suppress(OSError):
            own.parent.rmdir()  # `<DATA_DIR>/workspaces/<id>`, when nothing else is left in it

    async def list_instances(self) -> list[Instance]:
        """Managed containers, plus unlabelled `ws-<hex/dash>` ones (the reference's name sweep)."""
        try:
            rows = await self._run(lambda: self.client.api.containers(all=True, filters={"name": "ws-"}))
        except ENGINE_ERRORS as exc:
            raise BackendError("could not list containers", str(exc)) from exc
        out: list[Instance] = []
        for row in rows:
            name = next(
                (n.lstrip("/") for n in row.get("Names") or [] if n.lstrip("/").startswith("ws-")), ""
            )
            labels = row.get("Labels") or {}
            prefix = name[3:]
            managed = labels.get(MANAGED_LABEL) == "true"
            if not name or not prefix or name.endswith("-seed") or "-seed-" in name:
                continue
            if not managed and not _HEX_DASH.match(prefix):
                continue
            out.append(
                Instance(
                    name=name,
                    workspace_id=labels.get(WORKSPACE_LABEL) or None,
                    id_prefix=prefix,
                    running=row.get("State") == "running",
                )
            )
        return out

    # ---- files API (spec 02 §7): argv execs and the archive API, never a shell string ----
    async def list_files(
        self, ws_id: str, directory: str, depth: int, *, helper_image: str = ""
    ) -> list[FileEntry]:
        root, _ = split_workspace_path(directory)
        return await self._files_call(self._list_files_sync, ws_id, directory, root, depth, helper_image)

    async def read_file(self, ws_id: str, path: str, *, helper_image: str = "") -> bytes | None:
        root, rest = split_workspace_path(path)
        if not rest:
            return None
        return await self._files_call(self._read_file_sync, ws_id, path, root, helper_image)

    async def write_files(
        self, ws_id: str, files: Mapping[str, bytes], *, helper_image: str = ""
    ) -> Literal["container", "volume"]:
        return await self._files_call(self._write_any_sync, ws_id, dict(files), helper_image)

    async def delete_path(self, ws_id: str, rel: str, *, helper_image: str = "") -> None:
        root, rest = split_workspace_path(f"{CONFIG_MOUNT}/{rel}")
        await self._files_call(self._delete_sync, ws_id, f"{root}/{rest}", helper_image)

    async def _files_call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        except UnsafePath as exc:
            raise InvalidPath(str(exc)) from exc
        except BackendError:
            raise
        except ENGINE_ERRORS as exc:
            log.warning("files API call in %s failed: %s", instance_name(args[0]), exc)
            raise BackendError("workspace files unavailable", str(exc)) from exc

    def _container_or_none(self, ws_id: str) -> Any | None:
        try:
            return self.client.containers.get(instance_name(ws_id))
        except docker.errors.NotFound:
            return None

    @contextlib.contextmanager
    def _volume_helper(self, ws_id: str, helper_image: str, **create_kw: Any) -> Iterator[Any]:
        """A never-started container with the config volume at /configs, removed afterwards.

        Only for a workspace whose container is gone but whose config volume exists; it is created from
        an image already on the host (never pulled) and has no network. The `-seed-` name keeps the
        orphan sweeper away from it.
        """
        try:
            self.client.volumes.get(configs_volume(ws_id))
        except docker.errors.NotFound as exc:
            raise InstanceNotRunning from exc
        if not helper_image:
            raise InstanceNotRunning
        helper = self.client.containers.create(
            helper_image,
            name=f"{instance_name(ws_id)}-seed-files-{time.time_ns()}",
            volumes={configs_volume(ws_id): {"bind": CONFIG_MOUNT, "mode": "rw"}},
            labels={MANAGED_LABEL: "true", WORKSPACE_LABEL: ws_id},
            network_mode="none",
            **create_kw,
        )
        try:
            yield helper
        finally:
            with contextlib.suppress(*ENGINE_ERRORS):
                helper.remove(force=True)

    @contextlib.contextmanager
    def _config_holder(self, ws_id: str, container: Any | None, helper_image: str) -> Iterator[Any]:
        """The workspace's own (stopped) container when it still exists, else a volume helper."""
        if container is not None:
            yield container
            return
        with self._volume_helper(ws_id, helper_image) as helper:
            yield helper

    def _list_files_sync(
        self, ws_id: str, directory: str, root: str, depth: int, helper_image: str
    ) -> list[FileEntry]:
        container = self._container_or_none(ws_id)
        if container is not None and _running(container):
            return self._find(ws_id, directory, depth)
        if root != CONFIG_MOUNT:
            raise InstanceNotRunning
        with self._config_holder(ws_id, container, helper_image) as holder:
            data = _get_archive(holder, directory, MAX_LIST_ARCHIVE)
        return [] if data is None else entries_from_archive(data, depth)

    def _find(self, ws_id: str, directory: str, depth: int) -> list[FileEntry]:
        res = self._exec_sync(ws_id, find_argv(directory, depth, GNU_FIND_PRINT), False)
        if res.exit_code != 0 and not res.stdout and b"printf" in res.stderr:
            # BusyBox find has no -printf: stat each entry instead (newline-separated output)
            res = self._exec_sync(ws_id, find_argv(directory, depth, STAT_FIND_PRINT), False)
            return parse_stat_listing(res.stdout, directory)
        return parse_find_listing(res.stdout)

    def _read_file_sync(self, ws_id: str, path: str, root: str, helper_image: str) -> bytes | None:
        container = self._container_or_none(ws_id)
        if container is not None and _running(container):
            # `test -f` first: `cat` of a FIFO or device planted by the agent would never end
            if self._exec_sync(ws_id, ["test", "-f", path], False).exit_code != 0:
                return None
            res = self._exec_sync(ws_id, ["head", "-c", str(MAX_EXEC_OUTPUT + 1), path], False)
            if res.exit_code != 0:
                return None
            if len(res.stdout) > MAX_EXEC_OUTPUT or res.truncated:
                raise FileTooLargeError
            return res.stdout
        if root != CONFIG_MOUNT:
            raise InstanceNotRunning
        with self._config_holder(ws_id, container, helper_image) as holder:
            data = _get_archive(holder, path, MAX_EXEC_OUTPUT + 1024 * 1024)
        return None if data is None else file_from_archive(data)

    def _write_any_sync(
        self, ws_id: str, files: dict[str, bytes], helper_image: str
    ) -> Literal["container", "volume"]:
        container = self._container_or_none(ws_id)
        with self._config_holder(ws_id, container, helper_image) as holder:
            uid, gid = self._owner(holder)
            holder.put_archive(CONFIG_MOUNT, config_tar(files, uid, gid))
        return "container" if container is not None and _running(container) else "volume"

    def _delete_sync(self, ws_id: str, path: str, helper_image: str) -> None:
        container = self._container_or_none(ws_id)
        if container is not None and _running(container):
            res = self._exec_sync(ws_id, ["rm", "-rf", "--", path], False)
            if res.exit_code != 0:
                raise BackendError("delete failed", res.stderr.decode("utf-8", "replace")[:500])
            return
        # stopped or gone: a helper on the config volume runs the same argv
        with self._volume_helper(ws_id, helper_image, entrypoint=["rm"], command=["-rf", "--", path]) as h:
            h.start()
            code = int((h.wait(timeout=60) or {}).get("StatusCode", -1))
        if code != 0:
            raise BackendError("delete failed", f"rm exited {code}")

    async def close(self) -> None:
        self._pool.shutdown(wait=False)
        await self._run(self.client.close)


class _PortConflict(Exception):
    """The host port we picked was taken between picking and publishing it."""


class _HostDirUnseen(Exception):
    """The engine does not see the host dir behind the configs volume (the container was removed)."""


def _engine_unreachable(exc: BaseException) -> bool:
    """No answer from the engine at all (socket missing, refused, reset), as opposed to an answer that
    refuses the request."""
    return isinstance(exc, requests.exceptions.ConnectionError | ConnectionError)


def _host_port(info: Mapping[str, Any]) -> int | None:
    """The host port a container's agent answers on: published AGENT_PORT (bridge), else its A2A_PORT
    (host networking, where the agent binds the host port itself)."""
    ports = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{AGENT_PORT}/tcp") or []
    for binding in ports:
        raw = str(binding.get("HostPort") or "")
        if raw.isdigit():
            return int(raw)
    mode = (info.get("HostConfig") or {}).get("NetworkMode")
    if mode == "host":
        for item in (info.get("Config") or {}).get("Env") or []:
            key, _, value = str(item).partition("=")
            if key == "A2A_PORT" and value.isdigit():
                return int(value)
    return None


def _labels(ws_id: str) -> dict[str, str]:
    return {MANAGED_LABEL: "true", WORKSPACE_LABEL: ws_id}


def _truthy(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


class DockerExecSession:
    """A `docker exec` with a pty, over the engine's hijacked socket (raw bytes: tty mode has no framing)."""

    def __init__(self, backend: DockerBackend, exec_id: str, sock_io: Any) -> None:
        self.backend = backend
        self.exec_id = exec_id
        self._io = sock_io  # keeps the HTTP response (and so the socket) alive
        self.sock: socket.socket = getattr(sock_io, "_sock", sock_io)
        self.sock.setblocking(False)
        self._closed = False

    async def read(self, max_bytes: int = 4096) -> bytes:
        if self._closed:
            return b""
        try:
            return await asyncio.get_running_loop().sock_recv(self.sock, max_bytes)
        except OSError:
            return b""

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise BackendError("session closed")
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError as exc:
            raise BackendError("session closed") from exc

    async def resize(self, rows: int, cols: int) -> None:
        if rows <= 0 or cols <= 0:
            return
        with contextlib.suppress(*ENGINE_ERRORS):
            await self.backend._run(lambda: self.backend.client.api.exec_resize(self.exec_id, rows, cols))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(Exception):
            self._io.close()


# ---- files API helpers (pure, unit-tested) ----

MAX_LIST_ARCHIVE = 64 * 1024 * 1024  # a stopped workspace's /configs is listed from a tar of it
_PRUNE = ["(", "-name", ".git", "-o", "-name", "__pycache__", "-o", "-name", "node_modules", ")", "-prune"]
GNU_FIND_PRINT = ["-printf", "%y\\t%s\\t%P\\0"]
STAT_FIND_PRINT = ["-exec", "stat", "-c", "%F|%s|%n", "{}", "+"]


def _running(container: Any) -> bool:
    return bool((container.attrs.get("State") or {}).get("Running"))


def find_argv(directory: str, depth: int, action: list[str]) -> list[str]:
    """`find` over an absolute directory: entries 1..depth deep, skip-listed dirs pruned, .DS_Store hidden."""
    if not directory.startswith("/"):
        raise BackendError("invalid path", "find needs an absolute directory")
    return [
        "find",
        directory,
        "-mindepth",
        "1",
        "-maxdepth",
        str(depth),
        *_PRUNE,
        "-o",
        "!",
        "-name",
        ".DS_Store",
        *action,
    ]


def _walk_order(entries: list[FileEntry]) -> list[FileEntry]:
    """Depth-first, name-ordered (Go's filepath.Walk order): sort on the path's components."""
    return sorted(entries, key=lambda e: e.path.split("/"))


def _size(raw: str) -> int:
    return int(raw) if raw.isdigit() else 0


def parse_find_listing(out: bytes) -> list[FileEntry]:
    """GNU `-printf '%y\\t%s\\t%P\\0'` records → entries (directories report size 0)."""
    entries: list[FileEntry] = []
    for record in out.split(b"\0"):
        parts = record.decode("utf-8", "replace").split("\t", 2)
        if len(parts) != 3 or not parts[2]:
            continue
        is_dir = parts[0] == "d"
        entries.append(FileEntry(parts[2], 0 if is_dir else _size(parts[1]), is_dir))
    return _walk_order(entries)


def parse_stat_listing(out: bytes, directory: str) -> list[FileEntry]:
    """BusyBox fallback: `stat -c '%F|%s|%n'` lines → entries relative to `directory`."""
    prefix = directory.rstrip("/") + "/"
    entries: list[FileEntry] = []
    for line in out.decode("utf-8", "replace").split("\n"):
        parts = line.split("|", 2)
        if len(parts) != 3 or not parts[2].startswith(prefix) or parts[2] == prefix:
            continue
        is_dir = parts[0] == "directory"
        entries.append(FileEntry(parts[2][len(prefix) :], 0 if is_dir else _size(parts[1]), is_dir))
    return _walk_order(entries)


def _get_archive(container: Any, path: str, cap: int) -> bytes | None:
    """The engine's tar of `path` (at most `cap` bytes of it), or None when the path does not exist."""
    try:
        stream, _stat = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    buf = bytearray()
    for chunk in stream:
        buf += chunk
        if len(buf) > cap:
            raise FileTooLargeError
    return bytes(buf)


def entries_from_archive(data: bytes, depth: int) -> list[FileEntry]:
    """Entries of a `get_archive` tar (its first member is the listed directory itself)."""
    entries: list[FileEntry] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    if not members or not members[0].isdir():
        return []
    top = members[0].name.rstrip("/") + "/"
    for m in members[1:]:
        if not m.name.startswith(top):
            continue
        rel = m.name[len(top) :].rstrip("/")
        parts = rel.split("/")
        if not rel or len(parts) > depth or any(p in SKIP_NAMES for p in parts):
            continue
        entries.append(FileEntry(rel, 0 if m.isdir() else m.size, m.isdir()))
    return _walk_order(entries)


def file_from_archive(data: bytes) -> bytes | None:
    """The content of a `get_archive` tar holding one regular file; None for anything else."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            return None
        f = tar.extractfile(member)
        return f.read() if f is not None else None
