"""Docker networking of a workspace: bridge (published loopback port, the agents' network) or host mode,
and the addresses that follow from it (package docstring, "Networking")."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors

from workspace_server.provisioner.base import (
    MANAGED_LABEL,
    WORKSPACE_LABEL,
    BackendError,
    instance_name,
)
from workspace_server.provisioner.docker.engine import (
    AGENT_PORT,
    ENGINE_ERRORS,
    DockerBase,
    is_not_found_error,
)
from workspace_server.provisioner.tiers import TierLimits, tier_limits


def _host_port(info: Mapping[str, Any]) -> int | None:
    """The host port a container's agent answers on: published AGENT_PORT (bridge), else its A2A_PORT
    (host networking, where the agent binds the host port itself)."""
    ports = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{AGENT_PORT}/tcp") or []
    for binding in ports:
        raw = str(binding.get("HostPort") or "")
        if raw.isdigit():
            return int(raw)
    mode = (info.get("HostConfig") or {}).get("NetworkMode")
    if mode == "host":
        for item in (info.get("Config") or {}).get("Env") or []:
            key, _, value = str(item).partition("=")
            if key == "A2A_PORT" and value.isdigit():
                return int(value)
    return None


class NetworksMixin(DockerBase):
    def _network_kwargs(self, limits: TierLimits, port: int) -> tuple[dict[str, Any], dict[str, str]]:
        """(create kwargs, env extras) for the network mode."""
        url = f"http://localhost:{port}"
        if self.settings.docker_host_network or limits.host_network:
            extra = {"A2A_PORT": str(port), "A2A_HOST": "127.0.0.1", "MOLECULE_AGENT_URL": url}
            return {"network_mode": "host"}, extra
        kw: dict[str, Any] = {
            "ports": {f"{AGENT_PORT}/tcp": ("127.0.0.1", port)},
            "extra_hosts": {"host.docker.internal": "host-gateway"},
        }
        network = self._ensure_network()
        if network:
            kw["network"] = network
        return kw, {"A2A_PORT": str(AGENT_PORT), "MOLECULE_AGENT_URL": url}

    def _ensure_network(self) -> str:
        name = self.settings.DOCKER_NETWORK
        if not name or self._network_ready:
            return name
        try:
            self.client.networks.get(name)
        except docker.errors.NotFound:
            with contextlib.suppress(docker.errors.APIError):  # a concurrent create won the race
                self.client.networks.create(name, driver="bridge", labels={MANAGED_LABEL: "true"})
        self._network_ready = True
        return name

    async def instance_url(self, ws_id: str) -> str | None:
        """The url `start` returned for the workspace's running container, read back from the engine
        (start-up adoption: the server that started it may have died before recording it); None when no
        running container of ours carries the workspace."""
        try:
            info = await self._run(self.client.api.inspect_container, instance_name(ws_id))
        except docker.errors.NotFound:
            return None
        except ENGINE_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError) and is_not_found_error(str(exc)):
                return None
            raise BackendError("inspect failed", str(exc)) from exc
        config = info.get("Config") or {}
        if (config.get("Labels") or {}).get(WORKSPACE_LABEL) != ws_id:
            return None
        if not (info.get("State") or {}).get("Running"):
            return None
        port = _host_port(info)
        if port is None:
            return None
        with self._lock:  # never hand this port to another start
            self._ports[ws_id] = port
        return f"http://127.0.0.1:{port}"

    def shares_host_network(self, tier: int) -> bool:
        """Host networking, for every container (DOCKER_NETWORK_MODE) or for this tier (T4 privileged)."""
        return self.settings.docker_host_network or tier_limits(self.settings, tier).host_network

    def network_url(self, ws_id: str, url: str, tier: int) -> str:
        """The container name on the agents' network in bridge mode; in host mode it has no name there,
        and peers dial the host url too."""
        if self.shares_host_network(tier):
            return url
        return f"http://{instance_name(ws_id)}:{AGENT_PORT}"

    def dial_url(self, ws_id: str, url: str) -> str:
        """The published port is on the engine host's loopback. A server that itself runs in a container
        (MOLECULE_IN_DOCKER, else /.dockerenv) would dial its own loopback there, so it calls the agent by
        container name on the Docker network instead (spec 04 §1.3). Not in host network mode: there the
        agent listens on the engine host's loopback and has no name on any network (a server in a
        container that runs its own engine, as on our CI machines, reaches it at 127.0.0.1)."""
        if self.settings.docker_host_network or not self.settings.in_docker:
            return url
        return f"http://{instance_name(ws_id)}:{AGENT_PORT}"
