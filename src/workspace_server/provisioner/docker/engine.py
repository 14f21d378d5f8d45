"""What every part of the Docker backend shares: the engine client and its errors, the names of a
workspace's volumes and labels, and `DockerBase`, the state the concern mixins (containers, networks,
volumes, pulls, exec/logs, files) compose into `DockerBackend`."""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import platform as host_platform
import tarfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import docker
import docker.errors
import requests

from workspace_server.config import Settings
from workspace_server.provisioner.base import (
    MANAGED_LABEL,
    WORKSPACE_LABEL,
    BackendError,
    EngineUnavailable,
    FileTooLargeError,
    ImageNotFound,
    InstanceNotRunning,
    PullProgress,
    free_loopback_port,
    id12,
    instance_name,
)
from workspace_server.provisioner.docker.images import is_image_not_found_error

T = TypeVar("T")
AGENT_PORT = 8000
SESSIONS_MOUNT = "/root/.claude/sessions"
PORT_CONFLICT = ("port is already allocated", "address already in use")
ENGINE_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)


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


def progress_reporter(cb: Callable[[PullProgress], object] | None) -> Callable[[PullProgress], None]:
    """The pull-progress sink a start's worker thread calls: the caller's callback run on the event loop,
    where a broken sink is logged and never fails the start."""

    def report(ev: PullProgress) -> None:
        if cb is None:
            return
        try:
            anyio.from_thread.run_sync(cb, ev)
        except Exception:
            logging.getLogger(__name__).exception("pull progress callback failed")

    return report


def make_client(settings: Settings, timeout: int = 120) -> docker.DockerClient:
    return docker.DockerClient(
        base_url=settings.DOCKER_HOST or "unix:///var/run/docker.sock", timeout=timeout
    )


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


def _engine_unreachable(exc: BaseException) -> bool:
    """No answer from the engine at all (socket missing, refused, reset), as opposed to an answer that
    refuses the request."""
    return isinstance(exc, requests.exceptions.ConnectionError | ConnectionError)


def start_error(image: str, exc: BaseException) -> BackendError:
    """What a start the engine failed reports (the Docker and the Swarm backends alike): the image
    missing, no engine at all, or any other refusal."""
    if is_image_not_found_error(str(exc)):
        return ImageNotFound(image, str(exc))
    if _engine_unreachable(exc):
        return EngineUnavailable("workspace start failed", str(exc))
    return BackendError("workspace start failed", str(exc))


def _labels(ws_id: str) -> dict[str, str]:
    return {MANAGED_LABEL: "true", WORKSPACE_LABEL: ws_id}


def _truthy(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _running(container: Any) -> bool:
    return bool((container.attrs.get("State") or {}).get("Running"))


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


@dataclass(frozen=True)
class ServerContainer:
    """This server's own container, as the engine it drives sees it (MOLECULE_IN_DOCKER; networks.py)."""

    name: str  # what agents on the agents' network call the server by
    host_network: bool  # --network host: the server shares the engine host's loopback


class DockerBase:
    """The backend's shared state and the engine helpers more than one concern calls."""

    def __init__(self, settings: Settings, client: docker.DockerClient | None = None) -> None:
        self.settings = settings
        self.client = client or make_client(settings)
        self._lock = threading.Lock()
        self._ports: dict[str, int] = {}  # ws_id -> host port we assigned (never hand one out twice)
        self._network_ready = False
        # this server's own container (networks.locate_server); looked up once, None: not in one of ours
        self._server: ServerContainer | None = None
        self._server_located = False
        self._engine_cpus: int | None = None
        # host-dir configs volumes: local engine + root (to hand files to the agent's uid); None = the
        # engine's view of our dirs is not checked yet, False = it does not see them (never try again)
        self._host_volumes = is_local_engine(settings) and os.geteuid() == 0
        self._host_verified: bool | None = None
        self._owners: dict[str, tuple[int, int]] = {}  # image id -> uid/gid of a named image user
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker-prep")

    def _workspace_of(self, container_id: str, labels: Mapping[str, str]) -> str | None:
        """The workspace a container serves: its label (the warm pool adds claimed members, pool.py)."""
        return labels.get(WORKSPACE_LABEL) or None

    def _exec_env(self, container: Any) -> list[str]:
        """Env an exec into `container` adds to its own (a claimed warm member's workspace env, pool.py)."""
        return []

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

    def _force_remove(self, name: str) -> None:
        try:
            self.client.api.remove_container(name, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if is_not_found_error(str(exc)):
                return
            raise

    def _running_container(self, ws_id: str) -> Any:
        try:
            container = self.client.containers.get(instance_name(ws_id))
        except docker.errors.NotFound as exc:
            raise InstanceNotRunning from exc
        if not (container.attrs.get("State") or {}).get("Running"):
            raise InstanceNotRunning
        return container

    def _container_or_none(self, ws_id: str) -> Any | None:
        try:
            return self.client.containers.get(instance_name(ws_id))
        except docker.errors.NotFound:
            return None

    def _log_source(self, ws_id: str) -> str:
        """The container whose logs are the workspace's (the Swarm backend names its task container)."""
        return instance_name(ws_id)

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
