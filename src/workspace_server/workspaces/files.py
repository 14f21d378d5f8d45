"""A workspace's config files on the host: `<DATA_DIR>/workspaces/<id>/configs/`.

The provisioner mounts (or copies) that directory as the agent's `/configs`, so whatever runs inside the
workspace can plant symlinks there. Every path handled here is therefore confined: relative paths are
checked component by component, directories are walked by file descriptor with O_NOFOLLOW, and reads
skip symlinks and anything that is not a regular file. (The reference joined bundle skill ids and
relative paths into tar entries unchecked, so an import could write outside `/configs`; spec 06 §6.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from workspace_server.common.ids import parse_uuid
from workspace_server.config import Settings

MAX_FILE_BYTES = 5 * 1024 * 1024  # the reference's per-file cap when reading a container's /configs


class UnsafePath(ValueError):
    """A relative path that is empty, absolute, too long, or would leave its root."""


# Linux's NAME_MAX for one component; a whole relative path stays far below PATH_MAX (4096) once its
# root (data dir, workspace id, mount) is in front of it. Longer is bad input, not the OS's ENAMETOOLONG.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024


def _byte_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def workspace_config_dir(settings: Settings, ws_id: str) -> Path:
    """The host directory holding `ws_id`'s config files (not created here)."""
    canonical = parse_uuid(ws_id)
    if canonical is None:  # the id becomes a path component: only canonical UUIDs may
        raise UnsafePath("workspace id is not a UUID")
    return Path(settings.DATA_DIR).resolve() / "workspaces" / canonical / "configs"


def is_plain_name(name: str) -> bool:
    """One path component: not empty, not `.`/`..`, no separators or NUL, at most MAX_NAME_BYTES."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\\x00")
        and _byte_len(name) <= MAX_NAME_BYTES
    )


def split_relpath(rel: str) -> list[str]:
    """Components of a safe relative path (`a/b/c.md`), or UnsafePath."""
    parts = rel.split("/")
    if not rel or _byte_len(rel) > MAX_PATH_BYTES or not all(is_plain_name(p) for p in parts):
        raise UnsafePath(f"unsafe relative path {rel!r}")
    return parts


def check_tree(paths: list[str]) -> None:
    """Reject unsafe paths and file/directory clashes (`a` and `a/b` both files) before writing anything."""
    files = {tuple(split_relpath(p)) for p in paths}
    for parts in files:
        for i in range(1, len(parts)):
            if parts[:i] in files:
                raise UnsafePath(f"{'/'.join(parts[:i])!r} is both a file and a directory")


def _open_dir(name: str, parent_fd: int, create: bool) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent_fd)
    # O_NOFOLLOW: a symlinked directory fails here (ELOOP/ENOTDIR) instead of being entered
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)


def write_tree(root: Path, files: dict[str, bytes], mode: int | None = None) -> None:
    """Write `files` (relpath → content) under `root` without following symlinks (UnsafePath/OSError).

    `mode` (e.g. 0o600 for template imports) is applied to every written file; None keeps 0644 on create.
    """
    check_tree(list(files))
    root.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for rel, data in files.items():
            _write_one(root_fd, split_relpath(rel), data, mode)
    finally:
        os.close(root_fd)


def _write_one(root_fd: int, parts: list[str], data: bytes, mode: int | None = None) -> None:
    fds: list[int] = []
    try:
        dir_fd = root_fd
        for name in parts[:-1]:
            try:
                dir_fd = _open_dir(name, dir_fd, create=True)
            except OSError as exc:
                raise UnsafePath(f"cannot enter {name!r}") from exc
            fds.append(dir_fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(parts[-1], flags, 0o644 if mode is None else mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENAMETOOLONG):  # a symlink, a directory
                raise UnsafePath(f"cannot write {parts[-1]!r}") from exc
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePath(f"{parts[-1]!r} is not a regular file")
            if mode is not None:
                os.fchmod(fd, mode)  # an existing file keeps its old mode through O_CREAT
            _write_all(fd, data)
        finally:
            os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_file(root: Path, rel: str, max_bytes: int = MAX_FILE_BYTES) -> bytes | None:
    """Regular file at `root/rel` reached without symlinks, or None (missing, too big, unsafe)."""
    try:
        parts = split_relpath(rel)
    except UnsafePath:
        return None
    fds: list[int] = []
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        fds.append(dir_fd)
        for name in parts[:-1]:
            dir_fd = _open_dir(name, dir_fd, create=False)
            fds.append(dir_fd)
        return _read_at(parts[-1], dir_fd, max_bytes)
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _read_at(name: str, dir_fd: int, max_bytes: int) -> bytes | None:
    # O_NONBLOCK: opening a FIFO planted by the workspace must not hang the server
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_tree(root: Path, max_bytes: int = MAX_FILE_BYTES) -> dict[str, bytes]:
    """Every regular file under `root` (relpath → content), symlinks skipped; {} when root is unusable."""
    out: dict[str, bytes] = {}
    if not root.is_dir() or root.is_symlink():
        return out
    # fwalk with follow_symlinks=False never descends through a symlinked directory
    for dirpath, _dirs, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            try:
                data = _read_at(name, dir_fd, max_bytes)
            except OSError:
                continue  # a symlink (ELOOP) or a file that vanished
            if data is not None:
                out[(rel_dir / name).as_posix()] = data
    return out


def subdirs(root: Path) -> list[str]:
    """Names of real (non-symlink) subdirectories of `root`, sorted; [] when root is unusable."""
    try:
        with os.scandir(root) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


# ---- browsing a host directory for the files API (process backend, template fallback) ----

SKIP_NAMES = frozenset({".git", "__pycache__", "node_modules", ".DS_Store"})


class FileTooLarge(ValueError):
    """A regular file above the read cap."""


def _open_subdir(root: Path, parts: list[str]) -> int:
    """An fd for `root/parts…`, every component entered without following symlinks (OSError)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for name in parts:
        try:
            child = _open_dir(name, fd, create=False)
        finally:
            os.close(fd)
        fd = child
    return fd


def list_tree(root: Path, rel: str, depth: int) -> list[tuple[str, int, bool]] | None:
    """`(path, size, is_dir)` under `root/rel` down to `depth` levels, paths relative to `root/rel`.

    Depth-first in name order (as Go's filepath.Walk), SKIP_NAMES and their subtrees left out, symlinks
    listed as files and never entered. None when `root` itself is unusable; [] when `rel` is missing.
    """
    try:
        parts = split_relpath(rel) if rel else []
    except UnsafePath:
        return []
    try:
        top = _open_subdir(root, [])
    except OSError:
        return None
    os.close(top)
    try:
        fd = _open_subdir(root, parts)
    except OSError:
        return []
    out: list[tuple[str, int, bool]] = []
    try:
        _walk(fd, "", depth, out)
    finally:
        os.close(fd)
    return out


def _walk(dir_fd: int, prefix: str, depth: int, out: list[tuple[str, int, bool]]) -> None:
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError:
        return
    for name in names:
        if name in SKIP_NAMES:
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue  # vanished meanwhile
        path = prefix + name
        is_dir = stat.S_ISDIR(st.st_mode)
        out.append((path, st.st_size, is_dir))
        if is_dir and depth > 1:
            try:
                child = _open_dir(name, dir_fd, create=False)
            except OSError:
                continue
            try:
                _walk(child, path + "/", depth - 1, out)
            finally:
                os.close(child)


def read_regular(root: Path, rel: str, max_bytes: int = MAX_FILE_BYTES) -> bytes | None:
    """Like `read_file`, but a file over `max_bytes` raises FileTooLarge instead of reading as None."""
    try:
        parts = split_relpath(rel)
        fd = _open_subdir(root, parts[:-1])
    except (UnsafePath, OSError):
        return None
    try:
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        st = os.fstat(file_fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > max_bytes:
            raise FileTooLarge(rel)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(file_fd, 65536):
            size += len(chunk)
            if size > max_bytes:
                raise FileTooLarge(rel)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(file_fd)


def remove_path(root: Path, rel: str) -> bool:
    """Remove `root/rel` (a file, a symlink itself, or a directory tree) without following symlinks.

    False when nothing was there. Directory trees go through `shutil.rmtree(dir_fd=…)`, which is safe
    against symlink races on Linux.
    """
    import shutil

    parts = split_relpath(rel)
    try:
        fd = _open_subdir(root, parts[:-1])
    except OSError:
        return False
    try:
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=fd)
        else:
            os.unlink(parts[-1], dir_fd=fd)
        return True
    finally:
        os.close(fd)
