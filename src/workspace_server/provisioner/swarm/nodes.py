"""Workspaces on other nodes of the swarm (SWARM_NODE_ENGINES): which node holds a workspace's volumes,
that node's engine, and the address this server dials there.

The manager's engine (DOCKER_HOST) creates the services, but a task container on another node is not
reachable through it, and local volumes belong to one node. So every call that touches a workspace's
volumes or container (the pull policy and the seeding at start, exec, terminal, logs, the files API,
chat files, volume removal) goes to the engine of the node holding its volumes: this backend itself for
the manager's own node, else a backend of the same class on that node's engine, made with no node map
of its own, so it only ever does these per-node calls and never delegates again.

Which node: at a workspace's first start, the one whose `molecule.volume-host` label its tier's
constraints name (`SWARM_TIER_CONSTRAINTS=2=node.labels.molecule.volume-host==w1`); after that the node
where its volumes are (each engine is asked), which pins it there as on a single node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Literal, Self

import docker
import docker.errors

from workspace_server.provisioner.base import (
    BackendError,
    ExecResult,
    ExecSession,
    FileEntry,
    LiveConfig,
    instance_name,
)
from workspace_server.provisioner.docker.engine import ENGINE_ERRORS, configs_volume, workspace_volume
from workspace_server.provisioner.docker.files import FilesMixin
from workspace_server.provisioner.docker.networks import NetworksMixin
from workspace_server.provisioner.swarm import spec as svc
from workspace_server.provisioner.swarm.tasks import TasksMixin, live_task

log = logging.getLogger(__name__)

LOCAL = ""  # the node of the engine this server talks to (the manager), in the maps below


class NodesMixin(TasksMixin, NetworksMixin, FilesMixin):
    _nodes_lock: threading.Lock
    _node_backends: dict[str, Any]  # label value -> a backend of type(self) on that node's engine
    _ws_nodes: dict[str, str]  # ws_id -> label value of the node holding its volumes (LOCAL: this one)
    _dial_hosts: dict[str, str]  # ws_id -> address of the node its running task is on (remote nodes)

    def _init_nodes(self) -> None:
        self._nodes_lock = threading.Lock()
        self._node_backends = {}
        self._ws_nodes = {}
        self._dial_hosts = {}

    # ---- which node, which engine ----
    def _engine_for(self, node: str) -> Self:
        """This backend for LOCAL (or a value no engine is configured for: the manager's own node), else
        the backend on that node's engine, made on first use (a docker client connects when made)."""
        url = self.settings.swarm_node_engines.get(node) if node else None
        if url is None:
            return self
        with self._nodes_lock:
            backend = self._node_backends.get(node)
            if backend is None:
                settings = self.settings.model_copy(update={"SWARM_NODE_ENGINES": "", "DOCKER_HOST": url})
                backend = type(self)(settings, docker.DockerClient(base_url=url, timeout=120))
                self._node_backends[node] = backend
            return backend

    def _node_of_sync(self, ws_id: str) -> str:
        """The node holding the workspace's volumes: remembered, else the label its service carries, else
        the engine that has one of its volumes; LOCAL when none has (nothing of it exists yet)."""
        if not self.settings.swarm_node_engines:
            return LOCAL
        known = self._ws_nodes.get(ws_id)
        if known is not None:
            return known
        node = self._service_node(ws_id)
        if node is None:
            node = self._volumes_node(ws_id)
        if node is not None:
            self._ws_nodes[ws_id] = node
        return node or LOCAL

    def _service_node(self, ws_id: str) -> str | None:
        try:
            info = self.client.api.inspect_service(instance_name(ws_id))
        except docker.errors.NotFound:
            return None
        value = str(((info.get("Spec") or {}).get("Labels") or {}).get(svc.SERVICE_NODE_LABEL) or "")
        return value if value in self.settings.swarm_node_engines else LOCAL

    def _volumes_node(self, ws_id: str) -> str | None:
        """The node with one of the workspace's volumes. An engine that does not answer raises (a start
        retries, a files call fails): taken as "not there", a start would seed fresh volumes elsewhere
        and a purge would leave that node's behind."""
        for node in (LOCAL, *self.settings.swarm_node_engines):
            engine = self._engine_for(node)
            for name in (configs_volume(ws_id), workspace_volume(ws_id)):
                try:
                    engine.client.api.inspect_volume(name)
                except docker.errors.NotFound:
                    continue
                return node
        return None

    def _start_node_sync(self, ws_id: str, tier: int) -> str:
        """Where a start places the workspace: where its volumes are, else the node its tier names."""
        if not self.settings.swarm_node_engines:
            return LOCAL
        self._ws_nodes.pop(ws_id, None)  # asked afresh: the volumes may have been removed meanwhile
        node = self._volumes_node(ws_id)
        if node is None:
            wanted = svc.tier_volume_node(self.settings, tier)
            node = wanted if wanted in self.settings.swarm_node_engines else LOCAL
        self._ws_nodes[ws_id] = node
        return node

    def _engine_of_sync(self, ws_id: str) -> Self:
        return self._engine_for(self._node_of_sync(ws_id))

    async def _engine_of(self, ws_id: str) -> Self:
        if not self.settings.swarm_node_engines:
            return self
        try:
            return await self._run(self._engine_of_sync, ws_id)
        except ENGINE_ERRORS as exc:
            log.warning("finding the node of %s failed: %s", instance_name(ws_id), exc)
            raise BackendError("swarm node unreachable", str(exc)) from exc

    # ---- the address to dial ----
    def _task_node_addr(self, ws_id: str) -> str:
        """The address of the node the workspace's live task runs on, as the manager knows it."""
        tasks = self.client.api.tasks(filters={"service": instance_name(ws_id)})
        task = live_task(tasks)
        node_id = str((task or {}).get("NodeID") or "")
        if not node_id:
            raise docker.errors.NotFound(f"no node runs a task of {instance_name(ws_id)}")
        node = self.client.api.inspect_node(node_id)
        addr = str((node.get("Status") or {}).get("Addr") or "")
        if addr in ("", "0.0.0.0"):  # a manager may report its listen address; its advertised one is kept
            addr = str((node.get("ManagerStatus") or {}).get("Addr") or "").rpartition(":")[0]
        if not addr:
            raise docker.errors.NotFound(f"node {node_id} has no address")
        return addr

    def _note_dial_host(self, ws_id: str, node: str) -> None:
        """A task on another node publishes its port there: remember that node's address for `dial_url`."""
        if node == LOCAL:
            self._dial_hosts.pop(ws_id, None)
            return
        addr = self._task_node_addr(ws_id)
        self._dial_hosts[ws_id] = f"[{addr}]" if ":" in addr else addr

    def dial_url(self, ws_id: str, url: str) -> str:
        """DECIDE: the stored url stays `http://127.0.0.1:<port>` on every node (what registration keeps
        and the egress registry trusts for the workspace); a task on another node is dialled at that
        node's address, which the manager reports, never anything the agent says. A server inside the
        swarm still dials the service name (the Docker backend's rule, first)."""
        dialled = super().dial_url(ws_id, url)
        host = self._dial_hosts.get(ws_id)
        if dialled != url or host is None or not url.startswith("http://127.0.0.1:"):
            return dialled
        return f"http://{host}:{url.removeprefix('http://127.0.0.1:')}"

    # ---- the per-node calls of the protocol, on the node's engine ----
    async def exec(self, ws_id: str, argv: list[str], tty: bool = False) -> ExecResult:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.exec(ws_id, argv, tty)
        return await super().exec(ws_id, argv, tty)

    async def open_session(self, ws_id: str, argv: list[str]) -> ExecSession:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.open_session(ws_id, argv)
        return await super().open_session(ws_id, argv)

    async def logs(self, ws_id: str, tail: int = 200) -> str:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.logs(ws_id, tail)
        return await super().logs(ws_id, tail)

    async def write_config_files(self, ws_id: str, files: Mapping[str, bytes]) -> None:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.write_config_files(ws_id, files)
        return await super().write_config_files(ws_id, files)

    async def read_live_config(self, ws_id: str) -> LiveConfig:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.read_live_config(ws_id)
        return await super().read_live_config(ws_id)

    async def list_files(
        self, ws_id: str, directory: str, depth: int, *, helper_image: str = ""
    ) -> list[FileEntry]:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.list_files(ws_id, directory, depth, helper_image=helper_image)
        return await super().list_files(ws_id, directory, depth, helper_image=helper_image)

    async def read_file(self, ws_id: str, path: str, *, helper_image: str = "") -> bytes | None:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.read_file(ws_id, path, helper_image=helper_image)
        return await super().read_file(ws_id, path, helper_image=helper_image)

    async def write_files(
        self, ws_id: str, files: Mapping[str, bytes], *, helper_image: str = ""
    ) -> Literal["container", "volume"]:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.write_files(ws_id, files, helper_image=helper_image)
        return await super().write_files(ws_id, files, helper_image=helper_image)

    async def delete_path(self, ws_id: str, rel: str, *, helper_image: str = "") -> None:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            return await engine.delete_path(ws_id, rel, helper_image=helper_image)
        return await super().delete_path(ws_id, rel, helper_image=helper_image)

    async def remove_volumes(self, ws_id: str, workspace: bool = False) -> None:
        engine = await self._engine_of(ws_id)
        if engine is not self:
            await engine.remove_volumes(ws_id, workspace)
        else:
            await super().remove_volumes(ws_id, workspace)
        if workspace:  # nothing of it is left on that node: a later start chooses afresh
            self._ws_nodes.pop(ws_id, None)

    async def _close_nodes(self) -> None:
        with self._nodes_lock:
            backends, self._node_backends = list(self._node_backends.values()), {}
        for backend in backends:
            await backend.close()
