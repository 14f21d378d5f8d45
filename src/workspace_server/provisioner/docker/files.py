"""The files API on Docker (spec 02 §7): argv execs in a running container and the archive API (through
a short-lived helper on the config volume when the container is gone), never a shell string."""

from __future__ import annotations

import contextlib
import io
import logging
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import anyio
import anyio.to_thread
import docker
import docker.errors

from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MANAGED_LABEL,
    MAX_EXEC_OUTPUT,
    WORKSPACE_LABEL,
    BackendError,
    FileEntry,
    FileTooLargeError,
    InstanceNotRunning,
    InvalidPath,
    LiveConfig,
    instance_name,
    split_workspace_path,
)
from workspace_server.provisioner.docker.engine import (
    ENGINE_ERRORS,
    T,
    _get_archive,
    _running,
    configs_volume,
)
from workspace_server.provisioner.docker.execs import ExecMixin
from workspace_server.provisioner.docker.hostdirs import config_tar
from workspace_server.provisioner.docker.volumes import VolumesMixin
from workspace_server.workspaces.files import (
    SKIP_NAMES,
    UnsafePath,
)

log = logging.getLogger(__name__)

# ---- files API helpers (pure, unit-tested) ----

PROBE_SECONDS = 10.0  # reading the live config before a stop
MAX_LIST_ARCHIVE = 64 * 1024 * 1024  # a stopped workspace's /configs is listed from a tar of it
_PRUNE = ["(", "-name", ".git", "-o", "-name", "__pycache__", "-o", "-name", "node_modules", ")", "-prune"]
GNU_FIND_PRINT = ["-printf", "%y\\t%s\\t%P\\0"]
STAT_FIND_PRINT = ["-exec", "stat", "-c", "%F|%s|%n", "{}", "+"]


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


class FilesMixin(ExecMixin, VolumesMixin):
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
        container = self._container_or_none(ws_id)
        if container is None:
            raise InstanceNotRunning
        uid, gid = self._owner(container)
        # Into the volume itself: works on a read-only rootfs and leaves the root's owner alone.
        container.put_archive(CONFIG_MOUNT, config_tar(files, uid, gid))

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

    async def read_live_config(self, ws_id: str) -> LiveConfig:
        """config.yaml read from the running container, before a stop."""
        try:
            with anyio.fail_after(PROBE_SECONDS):
                res = await self.exec(ws_id, ["cat", "/configs/config.yaml"])
        except InstanceNotRunning:
            # no container to read from; a missing config volume is still a known-empty one
            return LiveConfig(not await self._configs_volume_exists(ws_id), None)
        except (BackendError, TimeoutError):
            log.warning("reading the live config of %s failed", ws_id, exc_info=True)
            return LiveConfig(False, None)
        if res.exit_code == 0:
            return LiveConfig(True, res.stdout)
        return LiveConfig(res.exit_code == 1, None)  # cat: 1 = no such file; 126/127 = no cat
