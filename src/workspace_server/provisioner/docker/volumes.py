"""Docker volumes of a workspace: configs (engine-managed, or bound to our host dir once the engine
is seen to share it), sessions (claude-code) and workspace; their mounts and their removal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import shutil
import tarfile
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import docker
import docker.errors

from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    BackendError,
    StartSpec,
    instance_name,
)
from workspace_server.provisioner.docker.engine import (
    ENGINE_ERRORS,
    SESSIONS_MOUNT,
    DockerBase,
    _get_archive,
    _labels,
    _truthy,
    configs_volume,
    sessions_volume,
    workspace_volume,
)
from workspace_server.provisioner.docker.pool_model import backing_volume
from workspace_server.provisioner.tiers import DOCKER_SOCK, TierLimits
from workspace_server.workspaces.files import (
    UnsafePath,
    workspace_config_dir,
)

log = logging.getLogger(__name__)

PROBE_OWNER = 4242  # uid/gid of the marker file that shows whether the engine sees our host dirs


def _probe_matches(archive: bytes, content: bytes) -> bool:
    """The engine's tar of the marker holds our bytes with our owner: it sees our host dir as we do."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            return False
        f = tar.extractfile(member)
        seen = f.read() if f is not None else b""
    return seen == content and (member.uid, member.gid) == (PROBE_OWNER, PROBE_OWNER)


class _HostDirUnseen(Exception):
    """The engine does not see the host dir behind the configs volume (the container was removed)."""


class VolumesMixin(DockerBase):
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
        self._remove_backed_volume(configs_volume(ws_id), strict=True)
        self.client.volumes.create(configs_volume(ws_id), labels=_labels(ws_id))

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

    def _remove_backed_volume(self, name: str, strict: bool) -> None:
        """A workspace volume, and the warm pool member volume whose data it is when a claim made it a bind
        on one (pool_engine.py; /workspace: pool.py): that one goes only after the workspace's is gone."""
        try:
            backing = backing_volume(self.client.api.inspect_volume(name).get("Labels") or {})
        except docker.errors.NotFound:
            return
        except ENGINE_ERRORS:
            if strict:
                raise
            backing = None
        self._remove_volume(name, strict)
        if backing:
            self._remove_volume(backing, False)

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
            await self._run(self._remove_backed_volume, configs_volume(ws_id), True)
        except ENGINE_ERRORS as exc:
            raise BackendError(f"could not remove volume {configs_volume(ws_id)}", str(exc)) from exc
        await self._run(self._remove_volume, sessions_volume(ws_id), False)
        if workspace:
            await self._run(self._remove_backed_volume, workspace_volume(ws_id), False)
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

    async def _configs_volume_exists(self, ws_id: str) -> bool:
        """True unless the engine says the configs volume is not there (errors count as present)."""
        try:
            await anyio.to_thread.run_sync(self.client.volumes.get, configs_volume(ws_id))
        except docker.errors.NotFound:
            return False
        except Exception:
            log.warning("inspecting the config volume of %s failed", ws_id, exc_info=True)
        return True
