"""`SwarmBackend`: the Swarm concerns composed with the Docker backend's own modules (see the package
docstring)."""

from __future__ import annotations

import threading

import docker

from workspace_server.chatfiles.fs import WorkspaceFS
from workspace_server.config import Settings
from workspace_server.provisioner.base import InstanceNotRunning
from workspace_server.provisioner.docker.chatfs import DockerFS
from workspace_server.provisioner.docker.engine import _running
from workspace_server.provisioner.swarm.services import ServicesMixin
from workspace_server.provisioner.swarm.spec import parse_tier_constraints


class SwarmBackend(ServicesMixin):
    """One Swarm service (one replica) per workspace. Services, tasks and secrets are this package's;
    exec, terminal, logs, the files API, chat files, volumes and pulls are the Docker backend's mixins,
    reaching the task container through `TasksMixin`'s lookups."""

    name = "swarm"
    pulls_images = True

    def __init__(self, settings: Settings, client: docker.DockerClient | None = None) -> None:
        super().__init__(settings, client)
        parse_tier_constraints(
            settings.SWARM_TIER_CONSTRAINTS
        )  # a malformed value fails start-up, not a start
        # engine-managed config volumes, written through a helper container: the host-dir shortcut
        # needs a container of our own to verify against, and a service's task is not ours to create
        self._host_volumes = False
        self._init_nodes()
        self._node_lock = threading.Lock()
        self._volume_node_value = ""

    async def chat_files(self, ws_id: str, workspace_dir: str, workspace_access: str) -> WorkspaceFS:
        """The running task container itself (the workspace mount is whatever it has)."""

        def running_container() -> object | None:
            try:
                container = self._container_or_none(ws_id)
            except Exception:  # an engine error: nothing to talk to
                return None
            return container if container is not None and _running(container) else None

        engine = await self._engine_of(ws_id)  # the engine of the node its task runs on (nodes.py)
        if engine is not self:
            return await engine.chat_files(ws_id, workspace_dir, workspace_access)
        container = await self._run(running_container)
        if container is None:
            raise InstanceNotRunning
        return DockerFS(self, container, ws_id)

    # No warm pool on Swarm (yet): a pool member would be a service whose task may land on any node, and the
    # claim renames a container (docker/pool.py), which a service's task is not ours to do.
    async def run_warm_pool(self) -> None:
        return None

    async def drain_warm_pool(self, image: str) -> None:
        return None

    async def close(self) -> None:
        await self._close_nodes()
        self._pool.shutdown(wait=False)
        await self._run(self.client.close)
