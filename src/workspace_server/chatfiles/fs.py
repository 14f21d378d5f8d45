"""Where a workspace's files live, behind one small interface (`WorkspaceFS`).

Each backend answers which one holds a live workspace (`Backend.chat_files`):
- the Docker backend's `DockerFS` (provisioner/docker/chatfs.py): the workspace's container;
- `HostFS`: the process backend (and no backend at all) keeps a workspace on the host:
  `/workspace` → `<DATA_DIR>/workspaces/<id>/workspace` (or the bound `workspace_dir`) and
  `/configs` → `<DATA_DIR>/workspaces/<id>/configs`; `/home` and `/plugins` do not exist there.
  Whatever runs in the workspace can plant symlinks in those directories, so every path is walked one
  component at a time with O_NOFOLLOW and only regular files are opened (FIFOs never block: O_NONBLOCK).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from workspace_server.config import Settings
from workspace_server.provisioner.base import BackendError, InstanceNotRunning, validate_workspace_mount
from workspace_server.workspaces.files import UnsafePath, split_relpath, workspace_config_dir, write_tree

CHUNK = 64 * 1024
SPOOL_IN_MEMORY = 1 << 20  # a container file above this is spooled to a temp file, not held in RAM


class FileNotFound(Exception):
    """Nothing readable at that path (missing, or reached only through a symlinked directory)."""


class NotRegularFile(Exception):
    """A directory, symlink, FIFO or device."""


class StageFailed(Exception):
    """Writing into the workspace failed (read-only, full, engine error); details are logged only."""


class StageRefused(StageFailed):
    """The upload directory leads out of the workspace (a planted symlink): refused, not a failure."""


@dataclass
class FileStream:
    size: int
    chunks: AsyncIterator[bytes]


class WorkspaceFS(Protocol):
    async def write_flat(self, directory: str, files: Mapping[str, bytes]) -> None:
        """Write `name → bytes` (plain names, no separators) into the absolute in-workspace `directory`."""
        ...

    async def open_file(self, path: str) -> FileStream:
        """A regular file at an absolute, clean in-workspace path (FileNotFound / NotRegularFile)."""
        ...


def _mount_of(path: str, mounts: Mapping[str, Any]) -> tuple[str, str] | None:
    """(mount point, path relative to it) for the longest mount containing `path`."""
    for point in sorted(mounts, key=len, reverse=True):
        if path == point:
            return point, ""
        if path.startswith(point + "/"):
            return point, path[len(point) + 1 :]
    return None


# ---------------------------------------------------------------- host directories


@dataclass
class HostFS:
    mounts: dict[str, Path]  # in-workspace mount point → host directory
    read_only: set[str] = field(default_factory=set)  # mount points bound read-only

    async def write_flat(self, directory: str, files: Mapping[str, bytes]) -> None:
        found = _mount_of(directory, self.mounts)
        if found is None or found[0] in self.read_only:
            raise StageFailed(f"{directory} is not writable on the host")
        point, rel = found
        tree = {f"{rel}/{name}" if rel else name: data for name, data in files.items()}
        try:
            await anyio.to_thread.run_sync(write_tree, self.mounts[point], tree)
        except UnsafePath as exc:  # names are sanitised: only a symlink planted on the way gets here
            raise StageRefused(str(exc)) from exc
        except OSError as exc:
            raise StageFailed(str(exc)) from exc

    async def open_file(self, path: str) -> FileStream:
        found = _mount_of(path, self.mounts)
        if found is None:
            raise FileNotFound(path)
        point, rel = found
        if not rel:
            raise NotRegularFile(path)
        fd, size = await anyio.to_thread.run_sync(_open_confined, self.mounts[point], rel)
        return FileStream(size, _fd_chunks(fd, size))


def _open_confined(root: Path, rel: str) -> tuple[int, int]:
    try:
        parts = split_relpath(rel)
    except UnsafePath:
        raise FileNotFound(rel) from None
    fds: list[int] = []
    try:
        fds.append(_open_dir(str(root), None))
        for name in parts[:-1]:
            fds.append(_open_dir(name, fds[-1]))
        return _open_regular(parts[-1], fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def _open_dir(name: str, parent_fd: int | None) -> int:
    try:
        # O_NOFOLLOW: a symlinked directory fails (ELOOP/ENOTDIR) instead of being entered
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        raise FileNotFound(name) from exc


def _open_regular(name: str, dir_fd: int) -> tuple[int, int]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the final component is a symlink
            raise NotRegularFile(name) from exc
        raise FileNotFound(name) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(name)
    return fd, st.st_size


async def _fd_chunks(fd: int, size: int) -> AsyncIterator[bytes]:
    """Exactly `size` bytes (the Content-Length already sent), or fewer if the file shrank meanwhile."""
    try:
        left = size
        while left > 0:
            chunk = await anyio.to_thread.run_sync(os.read, fd, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def host_fs(settings: Settings, ws_id: str, workspace_dir: str, workspace_access: str) -> HostFS:
    """The host directories of a workspace (process backend, or no backend at all); InstanceNotRunning
    when the id or the bound directory names no place the agent could have used."""
    try:
        config_dir = workspace_config_dir(settings, ws_id)
    except UnsafePath:
        raise InstanceNotRunning from None
    workdir = config_dir.parent / "workspace"
    read_only: set[str] = set()
    access = workspace_access or "none"
    try:
        bound = validate_workspace_mount(workspace_dir or "", access)
    except BackendError:
        raise InstanceNotRunning from None  # the agent could not have started with that mount either
    if bound is not None:
        workdir = Path(bound)
        if access == "read_only":
            read_only.add("/workspace")
    return HostFS({"/workspace": workdir, "/configs": config_dir}, read_only)
