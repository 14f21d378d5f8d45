"""A workspace's task container on this node: what the Docker backend's exec, terminal, logs and files
modules reach through `DockerBase._container_or_none` / `_running_container` / `_log_source`, found by
the service's label instead of the container name (Swarm names a task `ws-<id12>.1.<task id>`).

The workspace's volumes live on one node and the service is pinned there (spec.VOLUME_NODE_LABEL), so
its task container is a local container of that node's engine: this backend's for the manager's node,
the node backend's for another (nodes.py), on which these lookups then run.
"""

from __future__ import annotations

from typing import Any

import docker.errors

from workspace_server.provisioner.base import InstanceNotRunning, instance_name
from workspace_server.provisioner.docker.engine import DockerBase

SERVICE_NAME_LABEL = "com.docker.swarm.service.name"  # set by Swarm on every task container
# task states on the way to running, or running: the instance is not gone (spec 02 §1 `is_running`)
LIVE_STATES = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}
)


def live_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task that is (or is becoming) the workspace's instance: desired running, not yet ended."""
    for task in tasks:
        state = str((task.get("Status") or {}).get("State") or "")
        if task.get("DesiredState") == "running" and state in LIVE_STATES:
            return task
    return None


class TasksMixin(DockerBase):
    def _task_containers(self, ws_id: str) -> list[Any]:
        """This node's containers of the workspace's service, running ones first, then newest first."""
        rows = self.client.api.containers(
            all=True, filters={"label": f"{SERVICE_NAME_LABEL}={instance_name(ws_id)}"}
        )
        rows.sort(key=lambda r: (r.get("State") == "running", int(r.get("Created") or 0)), reverse=True)
        return rows

    def _container_or_none(self, ws_id: str) -> Any | None:
        rows = self._task_containers(ws_id)
        if not rows:
            return None
        try:
            return self.client.containers.get(rows[0]["Id"])
        except docker.errors.NotFound:  # removed between the list and the get
            return None

    def _running_container(self, ws_id: str) -> Any:
        container = self._container_or_none(ws_id)
        if container is None or not (container.attrs.get("State") or {}).get("Running"):
            raise InstanceNotRunning
        return container

    def _log_source(self, ws_id: str) -> str:
        rows = self._task_containers(ws_id)
        if not rows:
            raise InstanceNotRunning
        return str(rows[0]["Id"])

    def _remove_task_containers(self, ws_id: str) -> None:
        """Once the service is gone its task is shut down in the background; remove its container now, as
        the Docker backend's stop does, so the volumes it used can go right after."""
        for row in self._task_containers(ws_id):
            self._force_remove(str(row["Id"]))
