"""Writing a host-bound configs volume's files directly, without following anything the agent planted
(see the package docstring, "Config files"), and the tar the engine is handed everywhere else."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

from workspace_server.provisioner.base import TOKEN_FILE
from workspace_server.workspaces.files import (
    check_tree,
    split_relpath,
)


def config_tar(
    files: Mapping[str, bytes],
    uid: int,
    gid: int,
    prefix: str = "",
    private: frozenset[str] = frozenset({TOKEN_FILE}),
) -> bytes:
    """A tar of `files` (relpath → bytes) under `prefix`, owned by uid:gid, in `files`' order; the
    `private` ones (the token file) 0600.

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
            info.mode = 0o600 if rel in private else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


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
