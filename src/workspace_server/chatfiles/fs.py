"""Where a workspace's files live, behind one small interface (`WorkspaceFS`).

- `DockerFS`: the workspace's container (`ws-<id12>`), via the Docker engine's archive API (the
  reference's CopyToContainer/CopyFromContainer) plus `mkdir`/`rm` run with argv, never a shell string.
- `HostFS`: the process backend (and no backend at all) keeps a workspace on the host:
  `/workspace` → `<DATA_DIR>/workspaces/<id>/workspace` (or the bound `workspace_dir`) and
  `/configs` → `<DATA_DIR>/workspaces/<id>/configs`; `/home` and `/plugins` do not exist there.
  Whatever runs in the workspace can plant symlinks in those directories, so every path is walked one
  component at a time with O_NOFOLLOW and only regular files are opened (FIFOs never block: O_NONBLOCK).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import anyio.to_thread

from workspace_server.workspaces.files import UnsafePath, split_relpath, write_tree

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


# ---------------------------------------------------------------- Docker containers


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class Execer(Protocol):
    async def exec(self, ws_id: str, argv: list[str], tty: bool = False) -> Any: ...


@dataclass
class DockerFS:
    backend: Execer
    container: Any  # docker SDK Container of the running workspace
    ws_id: str

    async def write_flat(self, directory: str, files: Mapping[str, bytes]) -> None:
        try:
            await self.backend.exec(self.ws_id, ["mkdir", "-p", "--", directory])
            # A planted symlink at a target name could redirect the extraction: remove exact names first.
            await self.backend.exec(self.ws_id, ["rm", "-f", "--", *(f"{directory}/{n}" for n in files)])
            archive = flat_tar(files)
            ok = await anyio.to_thread.run_sync(self.container.put_archive, directory, archive)
        except Exception as exc:  # engine and backend errors alike: the caller answers one message
            raise StageFailed(str(exc)) from exc
        if not ok:
            raise StageFailed("put_archive refused")

    async def open_file(self, path: str) -> FileStream:
        size, fileobj = await anyio.to_thread.run_sync(self._fetch, path)
        return FileStream(size, _file_chunks(fileobj, size))

    def _fetch(self, path: str) -> tuple[int, _Reader]:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        try:
            try:
                stream, _stat = self.container.get_archive(path)
                for chunk in stream:
                    spool.write(chunk)
            except Exception as exc:  # NotFound, or any engine error: the reference answers 404
                raise FileNotFound(path) from exc
            spool.seek(0)
            tar = tarfile.open(fileobj=spool, mode="r:")
            member = tar.next()
            if member is None or not member.isreg():
                raise NotRegularFile(path)
            data = tar.extractfile(member)
            if data is None:
                raise NotRegularFile(path)
            return member.size, _Closing(data, spool)
        except BaseException:
            spool.close()
            raise


class _Closing(io.RawIOBase):
    """A member's reader that also closes the spooled archive behind it."""

    def __init__(self, inner: IO[bytes], owner: IO[bytes]) -> None:
        self.inner, self.owner = inner, owner

    def read(self, n: int = -1) -> bytes:
        return self.inner.read(n)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.inner.close()
        self.owner.close()
        super().close()


async def _file_chunks(fileobj: _Reader, size: int) -> AsyncIterator[bytes]:
    try:
        left = size
        while left > 0:
            chunk = await anyio.to_thread.run_sync(fileobj.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        fileobj.close()


def flat_tar(files: Mapping[str, bytes]) -> bytes:
    """A tar of plain files (mode 0644) whose entries are bare names, extracted at the target directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise StageFailed(f"unsafe flat file name {name!r}")
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
