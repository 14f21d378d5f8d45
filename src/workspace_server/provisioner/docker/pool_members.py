"""Making the warm pool's members (pool.py): a container per (image, tier) started like a cold start of that
key, but named `molecule-pool-<hex>`, labelled with its key, port, owner and delivery mode, running
`waiter.WAITER` ahead of the image's command; its /configs a host-bound dir (pool_dirs.py) or an engine
volume (pool_engine.py), its /workspace a volume of its own that a claim makes the workspace's.
Also the image lookups the refill pass compares members with, and the sweep of volumes of gone members.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import docker.errors

from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MANAGED_LABEL,
    BackendError,
)
from workspace_server.provisioner.docker.engine import (
    ENGINE_ERRORS,
    parse_user,
)
from workspace_server.provisioner.docker.networks import NetworksMixin
from workspace_server.provisioner.docker.pool_dirs import (
    make_member_dir,
    pool_dir,
    remove_member_dir,
)
from workspace_server.provisioner.docker.pool_engine import root_tar
from workspace_server.provisioner.docker.pool_model import (
    POOL_BACKING_LABEL,
    POOL_IMAGE_LABEL,
    POOL_LABEL,
    POOL_MOUNT_LABEL,
    POOL_PORT_LABEL,
    POOL_PREFIX,
    POOL_SCOPE_LABEL,
    POOL_TIER_LABEL,
    POOL_UID_LABEL,
    POOL_WORKSPACE_LABEL,
    Key,
    Member,
    backing_volume,
    is_member_volume,
    pool_scope,
)
from workspace_server.provisioner.docker.pulls import PullsMixin
from workspace_server.provisioner.docker.volumes import VolumesMixin, _HostDirUnseen
from workspace_server.provisioner.docker.waiter import WAITER
from workspace_server.provisioner.tiers import tier_limits

log = logging.getLogger(__name__)


def _no_progress(_ev: Any) -> None:
    return None


class PoolMembersMixin(NetworksMixin, VolumesMixin, PullsMixin):
    def _engine_volumes(self) -> bool:
        """Members of the engine-volume mode (pool_engine.py): no host dirs the engine sees (not a local
        engine, not root, or the check on the first member failed). Else host-dir members (pool_dirs.py)."""
        return not (self._host_volumes and self._host_verified is not False)

    def _pool_scope(self) -> str:
        return pool_scope(self.settings.DATABASE_URL, str(self.settings.DATA_DIR))

    def _local_image(self, ref: str) -> dict[str, Any]:
        """The image as the engine has it now; pulled only when absent. Not the cold path's pull policy
        (a moving tag pulled on every start): a pass every second must not pull. A moving tag is followed
        all the same: a refresh drains, and a pull by a cold start changes the local id, so the members of
        the old id go on the next pass."""
        try:
            return dict(self.client.api.inspect_image(ref))
        except docker.errors.NotFound:
            return self._image_attrs(ref, _no_progress)

    def _current_image(self, ref: str) -> str | None:
        try:
            return str(self._local_image(ref).get("Id") or "") or None
        except (*ENGINE_ERRORS, BackendError) as exc:
            log.warning("warm pool: image %s unavailable: %s", ref, exc)
            return None

    def _create_member(self, key: Key) -> Member | None:
        image, tier = key
        attrs = self._local_image(image)
        config = attrs.get("Config") or {}
        user = str(config.get("User") or "")
        if user.partition(":")[0] and not user.partition(":")[0].isdigit():
            log.warning("warm pool: %s runs as a named user; not pooled", image)
            return None
        argv = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
        uid, gid = parse_user(user)
        limits = tier_limits(self.settings, tier)
        engine = self._engine_volumes()
        if engine and limits.read_only_rootfs:
            log.warning("warm pool: tier %d has a read-only rootfs; not pooled without host dirs", tier)
            return None
        name = f"{POOL_PREFIX}{uuid.uuid4().hex[:12]}"
        port = self._reserve_port(name)
        net_kw, extra = self._network_kwargs(limits, port)
        labels = {
            MANAGED_LABEL: "true",
            POOL_LABEL: "1",
            POOL_IMAGE_LABEL: image,
            POOL_TIER_LABEL: str(tier),
            POOL_PORT_LABEL: str(port),
            POOL_UID_LABEL: f"{uid}:{gid}",
            POOL_SCOPE_LABEL: self._pool_scope(),
        }
        kwargs: dict[str, Any] = {
            "name": name,
            "environment": [f"{k}={v}" for k, v in self._member_env(extra).items()],
            "labels": labels,
            "volumes": {f"{name}-configs": {"bind": CONFIG_MOUNT, "mode": "rw"}},  # bound to its host dir
            "restart_policy": {"Name": "unless-stopped"},
            "entrypoint": ["python3", "-c", WAITER],
            "command": argv,
            "detach": True,
            **net_kw,
            **limits.host_config(),
        }
        kwargs["nano_cpus"] = min(kwargs["nano_cpus"], self._cpu_cap())
        plat = self._platform()
        if plat:
            kwargs["platform"] = plat
        path = pool_dir(self.settings, name)
        try:
            if not limits.config_mount_only:  # /workspace as in a cold container, a volume of its own
                info = self.client.api.create_volume(f"{name}-workspace", labels=labels)
                labels = {**labels, POOL_WORKSPACE_LABEL: str(info.get("Mountpoint") or "")}
                kwargs["labels"] = labels
                kwargs["volumes"][f"{name}-workspace"] = {"bind": "/workspace", "mode": "rw"}
            if engine:
                info = self.client.api.create_volume(f"{name}-configs", labels=labels)
                kwargs["labels"] = {**labels, POOL_MOUNT_LABEL: str(info.get("Mountpoint") or "")}
                if not kwargs["labels"][POOL_MOUNT_LABEL]:
                    raise BackendError("warm pool", f"volume {name}-configs has no mountpoint")
                container = self.client.containers.create(image, **kwargs)
                container.put_archive("/", root_tar(uid, gid))  # /configs writable by the agent
            else:
                make_member_dir(path, uid, gid)
                opts = {"type": "none", "o": "bind", "device": str(path)}
                self.client.api.create_volume(f"{name}-configs", driver_opts=opts, labels=labels)
                container = self.client.containers.create(image, **kwargs)
                if (
                    self._host_verified is None
                ):  # the engine must see our dir (a server in a container may not)
                    self._verify_host_dir(container, path)
            container.start()
        except BaseException as exc:
            with self._lock:
                self._ports.pop(name, None)
            self._force_remove(name)
            for suffix in ("-configs", "-workspace"):
                self._remove_volume(f"{name}{suffix}", False)
            remove_member_dir(path)
            if isinstance(exc, _HostDirUnseen):
                return None  # _host_verified is False now: the next pass makes engine-volume members
            raise
        done = kwargs["labels"]
        return Member(
            name,
            str(container.id),
            port,
            uid,
            gid,
            done.get(POOL_MOUNT_LABEL, ""),
            done.get(POOL_WORKSPACE_LABEL, ""),
        )

    def _member_env(self, extra: dict[str, str]) -> dict[str, str]:
        preload = self.settings.WARM_POOL_PRELOAD
        return {"WORKSPACE_CONFIG_PATH": CONFIG_MOUNT, "MOLECULE_POOL_PRELOAD": preload, **extra}

    def _cpu_cap(self) -> int:  # ContainersMixin's (it subclasses this mixin); declared for mypy
        raise NotImplementedError

    def _remove_dangling_volumes(self) -> None:
        try:
            vols = self.client.api.volumes(filters={"dangling": True}).get("Volumes") or []
        except ENGINE_ERRORS:
            return
        try:  # member volumes behind a workspace's configs volume (engine mode) are the workspace's now
            owned = self.client.api.volumes(filters={"label": POOL_BACKING_LABEL}).get("Volumes") or []
        except ENGINE_ERRORS:
            return
        kept = {backing_volume(v.get("Labels") or {}) for v in owned}
        for v in vols:
            name = str(v.get("Name") or "")
            if is_member_volume(name) and name not in kept:
                try:
                    self.client.api.remove_volume(name)
                except ENGINE_ERRORS:  # in use again, or already gone
                    continue
                if name.endswith("-configs"):
                    remove_member_dir(pool_dir(self.settings, name.removesuffix("-configs")))
