"""`DockerBackend`: the Docker concerns composed into one `Backend` (see the package docstring)."""

from __future__ import annotations

import anyio.to_thread

from workspace_server.chatfiles.fs import WorkspaceFS
from workspace_server.provisioner.base import InstanceNotRunning, instance_name
from workspace_server.provisioner.docker.chatfs import DockerFS
from workspace_server.provisioner.docker.containers import ContainersMixin
from workspace_server.provisioner.docker.engine import _running
from workspace_server.provisioner.docker.files import FilesMixin


class DockerBackend(ContainersMixin, FilesMixin):
    """One container per workspace. Each concern is a mixin over `DockerBase`'s shared state (the client,
    the port reservations, the host-dir verdict): containers (which uses networks, volumes and pulls),
    and files (which uses exec/logs and volumes)."""

    name = "docker"
    pulls_images = True

    async def chat_files(self, ws_id: str, workspace_dir: str, workspace_access: str) -> WorkspaceFS:
        """The running container itself (the workspace mount is whatever the container has)."""

        def running_container() -> object | None:
            try:
                container = self.client.containers.get(instance_name(ws_id))
            except Exception:  # NotFound or an engine error: either way nothing to talk to
                return None
            return container if _running(container) else None

        container = await anyio.to_thread.run_sync(running_container)
        if container is None:
            raise InstanceNotRunning
        return DockerFS(self, container, ws_id)

    async def close(self) -> None:
        self._pool.shutdown(wait=False)
        await self._run(self.client.close)
