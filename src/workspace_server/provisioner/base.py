"""The backend contract (DESIGN §7, spec 02 §1): what every workspace backend provides.

A backend runs one agent per workspace and knows nothing of the database: the orchestrator resolves the
template, runtime, image, tier and env, then calls `start`, and moves the status itself. Rules every
backend follows (spec 02 §1):
- `start` replaces whatever runs for the workspace (idempotent); `stop` of an unknown or already-gone
  workspace is success, and a raised `stop` means the instance may still be alive (skip volume removal);
- `is_running` is False only when the instance is definitely gone or stopped; on a transient error it
  is True, because a False makes callers restart the workspace (the reference's restart storms);
- every error a caller may show to a user is a `BackendError` whose message is safe to show.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from workspace_server.workspaces.files import UnsafePath, read_tree, split_relpath

if TYPE_CHECKING:  # chatfiles.fs builds on this module: imported for the annotation only
    from workspace_server.chatfiles.fs import WorkspaceFS

WorkspaceAccess = Literal["none", "read_only", "read_write"]

CONFIG_MOUNT = "/configs"
TOKEN_FILE = ".auth_token"  # noqa: S105 - a file name, not a secret
MANAGED_LABEL = "molecule.platform.managed"
WORKSPACE_LABEL = "molecule.workspace.id"
MAX_EXEC_OUTPUT = 5 * 1024 * 1024  # the reference's cap on exec output (spec 02 §7)
# Host dirs that may never be bound as /workspace (spec 02 §2 "Mounts").
FORBIDDEN_WORKSPACE_ROOTS = (
    "/etc",
    "/var",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/sbin",
    "/bin",
    "/lib",
    "/usr",
)


class BackendError(Exception):
    """A provisioning failure whose `message` may be shown to users; `detail` is for the log only."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class ErrNoBackend(BackendError):
    """No backend is configured (WORKSPACE_BACKEND=none, or the chosen one is unreachable)."""

    def __init__(self) -> None:
        super().__init__("no workspace backend available")


class EngineUnavailable(BackendError):
    """The backend's engine did not answer at all (its socket is gone: a Docker daemon restarting).
    Transient: the orchestrator retries a start that met it, within the provision deadline."""


class ImageNotFound(BackendError):
    """The image is not on the host and pulling it failed."""

    def __init__(self, image: str, detail: str = "") -> None:
        super().__init__(
            f'image "{image}" not found: it is not available locally and pulling it failed', detail
        )
        self.image = image


class InstanceNotRunning(BackendError):
    """exec/logs/files on a workspace that has no running instance."""

    def __init__(self) -> None:
        super().__init__("container not running")


@dataclass(frozen=True)
class PullProgress:
    """One step of an image pull, as reported to `StartSpec.on_pull_progress`."""

    image: str
    status: str  # "pulling", the engine's per-layer status text, "pulled", "failed", "using cached image"
    layer: str = ""
    current: int = 0
    total: int = 0


PullCallback = Callable[[PullProgress], None]


@dataclass
class StartSpec:
    """Everything a backend needs to start one workspace (the orchestrator fills it)."""

    workspace_id: str
    image: str = ""
    runtime: str = ""
    tier: int = 2
    env: Mapping[str, str] = field(default_factory=dict)
    # the keys of `env` whose values are secrets (the secret store's): a backend that can keep them out of
    # the instance's spec does (Swarm: Swarm secrets, `<KEY>_FILE` in the env); others pass them as env
    secret_keys: frozenset[str] = frozenset()
    # name -> content written into /configs before the agent starts (incl. `config.yaml`, `.auth_token`);
    # empty with no template_dir = reuse what the config volume already holds (a plain restart)
    config_files: Mapping[str, bytes] = field(default_factory=dict)
    template_dir: Path | None = None  # host dir copied into /configs first (config_files win)
    workspace_path: str = ""  # host dir bound as /workspace when workspace_access is not "none"
    workspace_access: WorkspaceAccess = "none"
    platform_url: str = ""
    awareness_url: str = ""
    awareness_namespace: str = ""
    reset_session: bool = False
    # called on the event loop's thread for each pull step; keep it quick (forward to log/events)
    on_pull_progress: PullCallback | None = None


@dataclass(frozen=True)
class Started:
    """Where the started agent answers (host-reachable URL) and the backend's handle for it."""

    url: str
    instance_id: str


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes  # with tty=True, stdout and stderr arrive merged here
    stderr: bytes = b""
    truncated: bool = False  # output went past MAX_EXEC_OUTPUT and the rest was dropped


class InvalidPath(BackendError):
    """A files-API path that names no place the API may write: it escapes its root, passes through a
    symlink, or is too long. The caller's bad input (a 4xx), not a backend failure."""

    def __init__(self, detail: str = "", message: str = "invalid path") -> None:
        super().__init__(message, detail)


class FileTooLargeError(BackendError):
    """A file read through the files API is larger than MAX_EXEC_OUTPUT."""

    def __init__(self) -> None:
        super().__init__("file too large")


@dataclass(frozen=True)
class FileEntry:
    """One entry of a files-API listing; `path` is relative to the listed directory."""

    path: str
    size: int
    dir: bool


@dataclass(frozen=True)
class LiveConfig:
    """A workspace's config.yaml as it is on its volume, read before a stop (`Backend.read_live_config`)."""

    known: bool  # False: could not look (instance not running, probe error)
    content: bytes | None  # None: no config.yaml (when known)


@dataclass(frozen=True)
class ImageUser:
    """One managed instance and the image it was created from (image refresh)."""

    name: str
    image: str
    workspace_id: str  # "" for an instance without the workspace label


@dataclass(frozen=True)
class Instance:
    """One backend-managed agent, as seen by the orphan sweeper."""

    name: str
    workspace_id: str | None  # from the label; None for legacy unlabelled `ws-<id12>` containers
    id_prefix: str  # the `<id12>` of the name
    running: bool


@runtime_checkable
class ExecSession(Protocol):
    """An interactive command under a pty (the terminal): raw bytes both ways."""

    async def read(self, max_bytes: int = 4096) -> bytes:
        """Next chunk of output; b"" once the command has exited and all output was read."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def resize(self, rows: int, cols: int) -> None: ...

    async def close(self) -> None:
        """End the session (kills the command if it still runs); idempotent."""
        ...


def id12(ws_id: str) -> str:
    return ws_id[:12]


def instance_name(ws_id: str) -> str:
    """`ws-<id[:12]>` (spec 02 §8: `longer-than-twelve-characters` → `ws-longer-than-`)."""
    return f"ws-{id12(ws_id)}"


def build_env(spec: StartSpec, config_path: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The agent env in the reference's order (spec 02 §2), user env after the built-ins, `extra` last.

    A later key replaces an earlier one in place, so `spec.env` can override a built-in (as in the
    reference), while `extra` (our port/URL plumbing) cannot be overridden: a wrong A2A_PORT would leave
    the returned URL pointing at nothing.
    """
    platform = spec.platform_url
    env: dict[str, str] = {
        "WORKSPACE_ID": spec.workspace_id,
        "WORKSPACE_CONFIG_PATH": config_path,
        "PLATFORM_URL": platform,
        "MOLECULE_URL": platform,
        "TIER": str(spec.tier),
        "PLUGINS_DIR": "/plugins",
        "PYTHONPATH": "/app",
    }
    if spec.awareness_url and spec.awareness_namespace:
        env["AWARENESS_NAMESPACE"] = spec.awareness_namespace
        env["AWARENESS_URL"] = spec.awareness_url
    env.update(spec.env)
    env.update(extra)
    return env


def validate_workspace_mount(path: str, access: str) -> str | None:
    """The host path to bind as /workspace, None for a named volume; BackendError when unsafe.

    Spec 02 §2: `read_only`/`read_write` need an absolute path without `..`, outside system dirs.
    """
    if access in ("", "none"):
        return None
    if access not in ("read_only", "read_write"):
        raise BackendError(f"invalid workspace_access {access!r}")
    if not path:
        raise BackendError(f"workspace_access {access} requires a workspace_dir")
    if not path.startswith("/") or ".." in path.split("/") or "\x00" in path:
        raise BackendError("workspace_dir must be an absolute path without '..'")
    norm = "/" + path.strip("/")
    for root in FORBIDDEN_WORKSPACE_ROOTS:
        if norm == root or norm.startswith(root + "/"):
            raise BackendError(f"workspace_dir may not be under {root}")
    if norm == "/":
        raise BackendError("workspace_dir may not be /")
    return norm


def normalise_newlines(name: str, data: bytes) -> bytes:
    """Template scripts and prompts copied with CRLF→LF (spec 02 §2 step 8)."""
    if name.endswith((".sh", ".py", ".md")):
        return data.replace(b"\r\n", b"\n")
    return data


def gather_config_files(spec: StartSpec) -> dict[str, bytes]:
    """The files to write into /configs: the template tree (symlinks skipped), then `config_files` on top."""
    files: dict[str, bytes] = {}
    if spec.template_dir is not None:
        files.update({k: normalise_newlines(k, v) for k, v in read_tree(spec.template_dir).items()})
    files.update(spec.config_files)
    try:
        for rel in files:
            split_relpath(rel)
    except UnsafePath as exc:
        raise BackendError("invalid config file path", str(exc)) from exc
    return files


def free_loopback_port(avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A port free on 127.0.0.1 right now (the kernel's pick), not one of `avoid`."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise BackendError("no free port for the workspace")


@runtime_checkable
class FileAccess(Protocol):
    """The files API's view of a workspace (spec 02 §7), implemented by the docker and process backends.

    Paths are absolute in-workspace paths under CONFIG_MOUNT, `/workspace`, `/home` or `/plugins`, already
    validated by the caller; `rel` arguments are clean relative paths under CONFIG_MOUNT. No method builds
    a shell string. `InstanceNotRunning` means "nothing to read or write for this workspace here" (no
    running instance, and no stored config volume for a CONFIG_MOUNT path): callers fall back to the
    template. `helper_image` lets the docker backend reach a stopped workspace's config volume through a
    short-lived helper container created from that (local) image.
    """

    async def list_files(
        self, ws_id: str, directory: str, depth: int, *, helper_image: str = ""
    ) -> list[FileEntry]:
        """Entries under `directory` down to `depth` levels (VCS/cache dirs skipped); [] if it is missing."""
        ...

    async def read_file(self, ws_id: str, path: str, *, helper_image: str = "") -> bytes | None:
        """The file's bytes; None when missing or not a file; FileTooLargeError above MAX_EXEC_OUTPUT."""
        ...

    async def write_files(
        self, ws_id: str, files: Mapping[str, bytes], *, helper_image: str = ""
    ) -> Literal["container", "volume"]:
        """Write relpath → bytes under CONFIG_MOUNT; "container" when the instance runs, else "volume"."""
        ...

    async def delete_path(self, ws_id: str, rel: str, *, helper_image: str = "") -> None:
        """Remove CONFIG_MOUNT/rel (a file, or a directory tree); a missing path is not an error."""
        ...


FILES_API_ROOTS = (CONFIG_MOUNT, "/workspace", "/home", "/plugins")


def split_workspace_path(path: str) -> tuple[str, str]:
    """(root, clean relative rest) of an absolute files-API path; BackendError for anything else."""
    for root in FILES_API_ROOTS:
        if path == root:
            return root, ""
        if path.startswith(root + "/"):
            rest = path[len(root) + 1 :]
            try:
                split_relpath(rest)
            except UnsafePath as exc:
                raise InvalidPath(str(exc)) from exc
            return root, rest
    raise InvalidPath(f"{path!r} is outside the files API roots")


@runtime_checkable
class Backend(FileAccess, Protocol):
    """What the orchestrator and every route see of a backend; each backend answers for itself.

    No caller outside `provisioner/` looks at `name` (tests/unit/test_backend_protocol.py fails if one
    does): a question that differs between backends is a member here, so a new backend (a Swarm one is
    planned) is added by implementing this protocol and nothing else.
    """

    name: str  # for logs only
    # image refresh (POST /admin/workspace-images/refresh) applies: the backend runs images it pulls
    pulls_images: bool

    # ---- life cycle ----
    async def start(self, spec: StartSpec) -> Started: ...

    async def stop(self, ws_id: str) -> None: ...

    async def is_running(self, ws_id: str) -> bool: ...

    async def remove_volumes(self, ws_id: str, workspace: bool = False) -> None: ...

    async def list_instances(self) -> list[Instance]: ...

    async def instance_url(self, ws_id: str) -> str | None:
        """The url `start` returned for the workspace's running instance, read back from the instance
        (start-up adoption, when the server that started it died before recording it); None when the
        backend finds none this way (the process backend adopts its agents by pidfile instead)."""
        ...

    async def close(self) -> None: ...

    # ---- warm pool (issue 14 §3) ----
    async def run_warm_pool(self) -> None:
        """Keep the backend's warm pool topped up until cancelled (started once, on `ctx.tasks`); returns
        at once when the backend has no pool or it is off, after removing members a pool left behind."""
        ...

    async def drain_warm_pool(self, image: str) -> None:
        """Remove the unclaimed warm instances of `image` (the image refresh pulled it again)."""
        ...

    # ---- addresses ----
    def shares_host_network(self, tier: int) -> bool:
        """The agent runs in the server host's network namespace (so the server's loopback reaches it)."""
        ...

    def network_url(self, ws_id: str, url: str, tier: int) -> str:
        """What peers on the agents' network dial for the agent `start` returned `url` for."""
        ...

    def dial_url(self, ws_id: str, url: str) -> str:
        """The address this server dials for `url`, a loopback url this backend assigned, as seen from
        where the server runs (it may itself run in a container)."""
        ...

    # ---- inside the workspace ----
    async def exec(self, ws_id: str, argv: list[str], tty: bool = False) -> ExecResult:
        """Run argv (no shell) in the workspace; cancellable (wrap in `anyio.fail_after`)."""
        ...

    async def open_session(self, ws_id: str, argv: list[str]) -> ExecSession: ...

    async def logs(self, ws_id: str, tail: int = 200) -> str: ...

    async def write_config_files(self, ws_id: str, files: Mapping[str, bytes]) -> None: ...

    async def read_live_config(self, ws_id: str) -> LiveConfig:
        """The config.yaml the instance would start with now; never raises."""
        ...

    async def chat_files(self, ws_id: str, workspace_dir: str, workspace_access: str) -> WorkspaceFS:
        """Where chat attachments of a live workspace are staged and read; InstanceNotRunning if nowhere."""
        ...

    # ---- images ----
    async def pull_image(self, ref: str, auth: dict[str, str] | None) -> None:
        """Pull `ref` again (blocking work abandoned on cancel); only called when `pulls_images`."""
        ...

    async def image_users(self) -> list[ImageUser]:
        """Every managed instance with its image; only called when `pulls_images`."""
        ...
