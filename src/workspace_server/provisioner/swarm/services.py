"""Services of the Swarm backend: create (volumes seeded first, the token and the secret env values as
Swarm secrets), wait for the task, stop, state, and the inventories the orphan sweeper and the image
refresh read."""

from __future__ import annotations

import contextlib
import logging
import secrets as pysecrets
import threading
import time
from typing import Any

import docker.errors

from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MANAGED_LABEL,
    TOKEN_FILE,
    WORKSPACE_LABEL,
    BackendError,
    ImageUser,
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
    AGENT_PORT,
    ENGINE_ERRORS,
    PORT_CONFLICT,
    _labels,
    parse_user,
    progress_reporter,
    start_error,
)
from workspace_server.provisioner.docker.files import FilesMixin
from workspace_server.provisioner.docker.hostdirs import config_tar
from workspace_server.provisioner.docker.networks import NetworksMixin
from workspace_server.provisioner.docker.pulls import PullsMixin
from workspace_server.provisioner.swarm import spec as svc
from workspace_server.provisioner.swarm.nodes import LOCAL, NodesMixin
from workspace_server.provisioner.swarm.tasks import live_task
from workspace_server.provisioner.tiers import tier_limits

log = logging.getLogger(__name__)

TASK_START_SECONDS = 120.0  # inside the orchestrator's 180 s provision deadline
# a task no node may run (constraints, resources) stays pending; a start does not wait for a node to join
UNPLACEABLE_SECONDS = 3.0
ENDED_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})


# the env `start` sets itself, over any key of the workspace's: never taken for a secret's value
PLUMBING_ENV = frozenset({"A2A_PORT", "A2A_HOST", "MOLECULE_AGENT_URL"})


class _PortConflict(Exception):
    """The host port we picked was taken on the node before the task could publish it."""


class ServicesMixin(NodesMixin, NetworksMixin, FilesMixin, PullsMixin):
    _node_lock: threading.Lock  # set by SwarmBackend.__init__
    _volume_node_value: str  # this node's VOLUME_NODE_LABEL, once read or set

    # ---- start ----
    async def start(self, spec: StartSpec) -> Started:
        return await self._run(self._start_sync, spec, progress_reporter(spec.on_pull_progress))

    def _start_sync(self, spec: StartSpec, report: images.Report) -> Started:
        if not spec.image.strip():
            raise BackendError("no image for the workspace runtime")
        ws_id = spec.workspace_id
        limits = tier_limits(self.settings, spec.tier)
        svc.check_tier(limits)  # before anything of a running workspace is replaced
        bind_path = validate_workspace_mount(spec.workspace_path, spec.workspace_access)
        files = gather_config_files(spec)
        token_bytes = files.pop(TOKEN_FILE, None)  # a Swarm secret, not a file on the volume
        host_network = self.settings.docker_host_network or limits.host_network
        try:
            # the node holding (or, first time, to hold) its volumes, and that node's engine (nodes.py)
            where = self._start_node_sync(ws_id, spec.tier)
            engine = self._engine_for(where)
            self._remove_service_sync(ws_id)  # start replaces whatever runs for the workspace
            attrs = engine._image_attrs(spec.image, report)  # the moving-tag rule, on the volumes' node
            engine._configs_volume(ws_id)
            if spec.runtime == "claude-code":
                engine._sessions_volume(spec)
            uid, gid = engine._seed(ws_id, spec.image, attrs, files)
            token = self._token_secret(ws_id, token_bytes, uid, gid) if token_bytes is not None else None
            env_secrets = self._env_secrets(spec, uid, gid)
            node = self._volume_node() if where == LOCAL else where
            mounts = svc.mounts(engine._volumes(spec, limits, bind_path), limits)
            for attempt in range(3):
                port = self._reserve_port(ws_id)
                url = f"http://localhost:{port}"
                if host_network:
                    extra = {"A2A_PORT": str(port), "A2A_HOST": "127.0.0.1", "MOLECULE_AGENT_URL": url}
                else:
                    self._ensure_overlay()
                    extra = {"A2A_PORT": str(AGENT_PORT), "MOLECULE_AGENT_URL": url}
                kwargs = svc.service_kwargs(
                    settings=self.settings,
                    name=instance_name(ws_id),
                    ws_id=ws_id,
                    image=spec.image,
                    image_id=str(attrs.get("Id") or ""),
                    env=build_env(spec, CONFIG_MOUNT, extra),
                    limits=limits,
                    service_mounts=mounts,
                    host_network=host_network,
                    port=port,
                    token=token,
                    env_secrets=env_secrets,
                    volume_node=node,
                    nano_cpu_cap=engine._nano_cpu_cap(),
                )
                service_id = str(self.client.api.create_service(**kwargs)["ID"])
                try:
                    self._wait_running(ws_id)
                except _PortConflict:
                    log.info("host port %d was taken, retrying (%d)", port, attempt + 1)
                    self._remove_service_sync(ws_id, keep_secrets=True)
                    continue
                self._note_dial_host(ws_id, where)
                # the stored form on every node; dial_url maps it to a remote task's node (nodes.py)
                return Started(url=f"http://127.0.0.1:{port}", instance_id=service_id)
            raise BackendError("workspace start failed", "no free host port after 3 attempts")
        except BackendError:
            self._start_failed(ws_id)
            raise
        except ENGINE_ERRORS as exc:
            self._start_failed(ws_id)
            log.warning("start of %s failed: %s", instance_name(ws_id), exc)
            raise start_error(spec.image, exc) from exc

    def _start_failed(self, ws_id: str) -> None:
        """A failed start leaves nothing running, and no secret behind."""
        self._release_port(ws_id)
        try:
            self._remove_service_sync(ws_id)
        except ENGINE_ERRORS as exc:
            log.warning("removing %s after a failed start failed: %s", instance_name(ws_id), exc)

    def _seed(
        self, ws_id: str, image: str, attrs: dict[str, Any], files: dict[str, bytes]
    ) -> tuple[int, int]:
        """Write the config files into the configs volume through a never-started helper container on it
        (the Docker backend's put_archive, docker/files.py's helper); the image user's uid/gid."""
        user = str((attrs.get("Config") or {}).get("User") or "")
        image_id = str(attrs.get("Id") or "")
        named = bool(user.partition(":")[0]) and not user.partition(":")[0].isdigit()
        owner = self._owners.get(image_id) if named else parse_user(user)
        if files or owner is None:
            with self._volume_helper(ws_id, image) as helper:
                if owner is None:  # a named user: its /etc/passwd entry, once per image
                    owner = self._owners[image_id] = self._owner(helper, user)
                if files:  # a `configs/` entry also hands the volume root to the agent user
                    uid, gid = owner
                    prefix = CONFIG_MOUNT.strip("/") + "/"
                    helper.put_archive("/", config_tar(files, uid, gid, prefix=prefix))
        return owner

    def _token_secret(self, ws_id: str, data: bytes, uid: int, gid: int) -> svc.Token:
        """A new secret each start (secrets are immutable and the token rotates); the name never repeats."""
        name = f"{instance_name(ws_id)}-token-{pysecrets.token_hex(6)}"
        created = self.client.api.create_secret(name, data, labels=_labels(ws_id))
        return svc.Token(str(created["ID"]), name, uid, gid)

    def _env_secrets(self, spec: StartSpec, uid: int, gid: int) -> list[svc.EnvSecret]:
        """Each secret env value as a Swarm secret of its own, new each start (as the token): the service
        spec then names files, never values (`docker service inspect` shows none). Removed with the
        service (`_remove_service_sync`), whose workspace label they carry."""
        version = pysecrets.token_hex(6)
        out = []
        for key in sorted(spec.secret_keys & spec.env.keys() - PLUMBING_ENV):
            name = svc.env_secret_name(spec.workspace_id, key, version)
            labels = {**_labels(spec.workspace_id), svc.ENV_KEY_LABEL: key}
            created = self.client.api.create_secret(name, spec.env[key].encode(), labels=labels)
            out.append(svc.EnvSecret(key, str(created["ID"]), name, uid, gid))
        return out

    def _volume_node(self) -> str:
        """This engine's node's VOLUME_NODE_LABEL, set to its hostname when the operator has not set it.
        Workspaces are pinned to it: their volumes are local volumes of this node."""
        if self._volume_node_value:
            return self._volume_node_value
        with self._node_lock:
            node_id = str((self.client.info().get("Swarm") or {}).get("NodeID") or "")
            if not node_id:
                raise BackendError("this engine is not a swarm node")
            for _ in range(5):  # the node's version moves under concurrent updates: read again, retry
                node = self.client.api.inspect_node(node_id)
                node_spec = dict(node.get("Spec") or {})
                labels = dict(node_spec.get("Labels") or {})
                value = labels.get(svc.VOLUME_NODE_LABEL)
                if value:
                    self._volume_node_value = value
                    return value
                value = str((node.get("Description") or {}).get("Hostname") or node_id)
                node_spec["Labels"] = {**labels, svc.VOLUME_NODE_LABEL: value}
                try:
                    self.client.api.update_node(node_id, node["Version"]["Index"], node_spec)
                except docker.errors.APIError as exc:
                    log.info("labelling swarm node %s: %s (retrying)", node_id, exc)
                    continue
            raise BackendError("could not label this swarm node")

    def _nano_cpu_cap(self) -> int:
        if self._engine_cpus is None:
            with contextlib.suppress(*ENGINE_ERRORS):
                self._engine_cpus = int(self.client.info().get("NCPU") or 0)
        cpus = self._engine_cpus or 0
        return cpus * 1_000_000_000 if cpus > 0 else 1 << 62

    def _ensure_overlay(self) -> None:
        name = self.settings.SWARM_NETWORK
        if self._network_ready:
            return
        try:
            self.client.networks.get(name)
        except docker.errors.NotFound:
            with contextlib.suppress(docker.errors.APIError):  # a concurrent create won the race
                self.client.networks.create(
                    name, driver="overlay", attachable=True, labels={MANAGED_LABEL: "true"}
                )
        self._network_ready = True

    def _wait_running(self, ws_id: str) -> None:
        """Until the service's task runs (as a Docker start returns once the container runs)."""
        name = instance_name(ws_id)
        engine = self._engine_of_sync(ws_id)  # the node's engine sees its task container first
        deadline = time.monotonic() + TASK_START_SECONDS
        err = ""
        unplaceable = 0.0  # since when the scheduler has found no node for the task
        while time.monotonic() < deadline:
            # the task's container on this node runs before the manager hears of it: return then, as
            # soon as a Docker start would (the agent may register before the url is recorded otherwise)
            if any(row.get("State") == "running" for row in engine._task_containers(ws_id)):
                return
            tasks = self.client.api.tasks(filters={"service": name})
            for task in tasks:
                status = task.get("Status") or {}
                state = str(status.get("State") or "")
                err = str(status.get("Err") or err)
                if state == "running":
                    return
                if state in ENDED_STATES:
                    if any(p in err.lower() for p in PORT_CONFLICT):
                        raise _PortConflict
                    raise BackendError("workspace start failed", f"task {state}: {err}")
                if state == "pending" and "no suitable node" in err:
                    unplaceable = unplaceable or time.monotonic()
                    if time.monotonic() - unplaceable > UNPLACEABLE_SECONDS:
                        raise BackendError("no swarm node may run the workspace", err)
            time.sleep(0.03)
        raise BackendError(
            "workspace start failed", f"task not running after {TASK_START_SECONDS:.0f}s: {err}"
        )

    # ---- stop / state ----
    def _remove_service_sync(self, ws_id: str, keep_secrets: bool = False) -> None:
        name = instance_name(ws_id)
        try:
            self.client.api.remove_service(name)
        except docker.errors.NotFound:
            pass
        self._engine_of_sync(ws_id)._remove_task_containers(ws_id)
        if keep_secrets:
            return
        for row in self.client.api.secrets(filters={"label": f"{WORKSPACE_LABEL}={ws_id}"}):
            try:
                self.client.api.remove_secret(row["ID"])
            except docker.errors.NotFound:
                continue

    async def stop(self, ws_id: str) -> None:
        name = instance_name(ws_id)
        try:
            await self._run(self._remove_service_sync, ws_id)
        except ENGINE_ERRORS as exc:
            log.warning("removing service %s failed: %s", name, exc)
            raise BackendError(f"remove service {name} failed", str(exc)) from exc
        self._release_port(ws_id)
        self._dial_hosts.pop(ws_id, None)

    async def is_running(self, ws_id: str) -> bool:
        name = instance_name(ws_id)
        try:
            await self._run(self.client.api.inspect_service, name)
            tasks = await self._run(lambda: self.client.api.tasks(filters={"service": name}))
        except docker.errors.NotFound:
            return False
        except ENGINE_ERRORS as exc:
            # transient (timeout, EOF, a manager election): True, or callers would restart a live workspace
            log.warning("inspect %s failed, assuming running: %s", name, exc)
            return True
        return live_task(tasks) is not None

    async def instance_url(self, ws_id: str) -> str | None:
        """The url `start` returned, read back from the service (start-up adoption)."""
        name = instance_name(ws_id)
        try:
            info = await self._run(self.client.api.inspect_service, name)
            tasks = await self._run(lambda: self.client.api.tasks(filters={"service": name}))
        except docker.errors.NotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise BackendError("inspect failed", str(exc)) from exc
        spec = info.get("Spec") or {}
        task = live_task(tasks)
        if (spec.get("Labels") or {}).get(WORKSPACE_LABEL) != ws_id or task is None:
            return None
        if (task.get("Status") or {}).get("State") != "running":
            return None
        port = _service_port(info)
        if port is None:
            return None
        try:  # a task on another node is dialled there (nodes.py)
            await self._run(lambda: self._note_dial_host(ws_id, self._node_of_sync(ws_id)))
        except docker.errors.NotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise BackendError("inspect failed", str(exc)) from exc
        with self._lock:  # never hand this port to another start
            self._ports[ws_id] = port
        return f"http://127.0.0.1:{port}"

    async def list_instances(self) -> list[Instance]:
        """The managed services, running when their task runs; and, as not running, each workspace that
        has our secrets but no service (a start cut short between the two), so the orphan sweep's stop
        removes them as it removes a service's."""
        try:
            services = await self._run(
                lambda: self.client.api.services(filters={"label": f"{MANAGED_LABEL}=true"})
            )
            tasks = await self._run(lambda: self.client.api.tasks(filters={"desired-state": "running"}))
            secrets = await self._run(
                lambda: self.client.api.secrets(filters={"label": f"{MANAGED_LABEL}=true"})
            )
        except ENGINE_ERRORS as exc:
            raise BackendError("could not list services", str(exc)) from exc
        running = {t.get("ServiceID") for t in tasks if (t.get("Status") or {}).get("State") == "running"}
        out: list[Instance] = []
        for row in services:
            spec = row.get("Spec") or {}
            name = str(spec.get("Name") or "")
            if not name.startswith("ws-") or len(name) <= 3:
                continue
            out.append(
                Instance(
                    name=name,
                    workspace_id=(spec.get("Labels") or {}).get(WORKSPACE_LABEL) or None,
                    id_prefix=name[3:],
                    running=row.get("ID") in running,
                )
            )
        with_service = {i.workspace_id for i in out}
        for row in secrets:
            ws_id = str(((row.get("Spec") or {}).get("Labels") or {}).get(WORKSPACE_LABEL) or "")
            if ws_id and ws_id not in with_service:
                with_service.add(ws_id)
                out.append(Instance(instance_name(ws_id), ws_id, instance_name(ws_id)[3:], running=False))
        return out

    async def image_users(self) -> list[ImageUser]:
        rows = await self._run(lambda: self.client.api.services(filters={"label": f"{MANAGED_LABEL}=true"}))
        out = []
        for row in rows:
            spec = row.get("Spec") or {}
            labels = spec.get("Labels") or {}
            image = str(labels.get(svc.IMAGE_LABEL) or "")  # the ref: the spec names the image by id
            out.append(
                ImageUser(
                    name=str(spec.get("Name") or ""),
                    image=image,
                    workspace_id=labels.get(WORKSPACE_LABEL) or "",
                )
            )
        return out


def _service_port(info: dict[str, Any]) -> int | None:
    """The published AGENT_PORT, else (host network) the A2A_PORT the agent binds itself."""
    spec = info.get("Spec") or {}
    published = [
        *((info.get("Endpoint") or {}).get("Ports") or []),
        *((spec.get("EndpointSpec") or {}).get("Ports") or []),
    ]
    for port in published:
        if port.get("TargetPort") == AGENT_PORT and port.get("PublishedPort"):
            return int(port["PublishedPort"])
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    for item in container.get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "A2A_PORT" and value.isdigit() and int(value) != AGENT_PORT:
            return int(value)
    return None
