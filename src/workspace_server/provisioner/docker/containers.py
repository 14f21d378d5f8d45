"""Containers of the Docker backend: create and start (with the overlapped preparation and the initial
config files), stop, state and the inventory the orphan sweeper reads."""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.containers

from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MANAGED_LABEL,
    WORKSPACE_LABEL,
    BackendError,
    Instance,
    Started,
    StartSpec,
    build_env,
    gather_config_files,
    instance_name,
    validate_workspace_mount,
)
from workspace_server.provisioner.docker import images
from workspace_server.provisioner.docker.engine import (
    ENGINE_ERRORS,
    PORT_CONFLICT,
    _labels,
    configs_volume,
    is_not_found_error,
    parse_user,
    progress_reporter,
    start_error,
)
from workspace_server.provisioner.docker.hostdirs import config_tar, write_host_configs
from workspace_server.provisioner.docker.pool import WarmPoolMixin
from workspace_server.provisioner.docker.volumes import VolumesMixin, _HostDirUnseen
from workspace_server.provisioner.tiers import TierLimits, tier_limits
from workspace_server.workspaces.files import UnsafePath

log = logging.getLogger(__name__)

_HEX_DASH = re.compile(r"^[0-9a-f-]+$")


@dataclass(frozen=True)
class _Prepared:
    """What the overlapped engine calls before a create found out."""

    image_id: str
    user: str  # the image's `User`
    owner: tuple[int, int] | None  # its uid/gid; None: a user name, to look up in the container
    host_dir: Path | None  # the configs volume is bound to this host dir and we write there


class _PortConflict(Exception):
    """The host port we picked was taken between picking and publishing it."""


class ContainersMixin(WarmPoolMixin, VolumesMixin):
    # ---- start ----
    async def start(self, spec: StartSpec) -> Started:
        return await self._run(self._start_sync, spec, progress_reporter(spec.on_pull_progress))

    def _start_sync(self, spec: StartSpec, report: images.Report) -> Started:
        if not spec.image.strip():
            raise BackendError("no image for the workspace runtime")
        limits = tier_limits(self.settings, spec.tier)
        bind_path = validate_workspace_mount(spec.workspace_path, spec.workspace_access)
        files = gather_config_files(spec)
        name = instance_name(spec.workspace_id)
        try:
            warm = self._claim_warm(spec, limits, bind_path)  # None without a pool member: the cold path
            if warm is not None:
                return warm
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
            raise start_error(spec.image, exc) from exc

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

    # ---- stop / state ----
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
                    workspace_id=self._workspace_of(str(row.get("Id") or ""), labels),
                    id_prefix=prefix,
                    running=row.get("State") == "running",
                )
            )
        return out
