"""Docker networking of a workspace: bridge (published loopback port, the agents' network) or host mode,
and the addresses that follow from it (package docstring, "Networking")."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from collections.abc import Mapping
from pathlib import Path
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
    ServerContainer,
    is_not_found_error,
)
from workspace_server.provisioner.tiers import TierLimits, tier_limits

log = logging.getLogger(__name__)

# Docker bind-mounts each container's hostname/hosts/resolv.conf from its own directory, so our mount
# table names our container id whatever --hostname says.
_CONTAINER_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\s")


def own_container_ids(mountinfo: str, hostname: str) -> list[str]:
    """Candidate ids of the container this process runs in: the ids in its mount table, then its hostname
    (Docker's default hostname is the short id); the engine confirms which one is real."""
    ids = list(dict.fromkeys(_CONTAINER_MOUNT.findall(mountinfo)))
    if re.fullmatch(r"[0-9a-f]{12}", hostname):
        ids.append(hostname)
    return ids


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
        extra = {"A2A_PORT": str(AGENT_PORT), "MOLECULE_AGENT_URL": url}
        server = self.server_container()
        if network and server is not None and not server.host_network and not self.settings.PLATFORM_URL:
            # host.docker.internal is the engine host, where this server has no port of its own: agents
            # call it by its container name on the network they share (joined in _ensure_network)
            platform = f"http://{server.name}:{self.settings.PORT}"
            extra |= {"PLATFORM_URL": platform, "MOLECULE_URL": platform}
        return kw, extra

    def _reattach(self, container: str, name: str, limits: TierLimits) -> None:
        """After a rename (a warm pool claim), make the agents' network's DNS answer the new name.

        The engine does not always move a container's DNS record with a rename (20.10 keeps the old name
        and never learns the new one; a member renamed before its endpoint's record was added gets the
        new one), so peers and a server in a container, which dial `ws-<id12>` (`network_url`,
        `dial_url`), would not find a claimed member. Leaving and rejoining the network registers the
        endpoint under the current name (plus that name as an alias, whatever the engine's rule); the
        published port stays (it belongs to the container), and the agent has not started yet (it waits
        for its identity), so no connection of its own breaks. Nothing to do with host networking or
        without a network of ours (the default bridge has no DNS)."""
        if self.settings.docker_host_network or limits.host_network:
            return
        network = self._ensure_network()
        if not network:
            return
        self.client.api.disconnect_container_from_network(container, network)
        self.client.api.connect_container_to_network(container, network, aliases=[name])

    def _ensure_network(self) -> str:
        name = self.settings.DOCKER_NETWORK
        if not name or self._network_ready:
            return name
        try:
            self.client.networks.get(name)
        except docker.errors.NotFound:
            with contextlib.suppress(docker.errors.APIError):  # a concurrent create won the race
                self.client.networks.create(name, driver="bridge", labels={MANAGED_LABEL: "true"})
        self._join_network(name)
        self._network_ready = True
        return name

    def _join_network(self, name: str) -> None:
        """A server in a bridged container joins the agents' network itself (once), so it can dial them
        by container name and they can call it by its own, whichever network the operator started it on."""
        server = self.server_container()
        if server is None or server.host_network:
            return
        try:
            info = self.client.api.inspect_container(server.name)
        except ENGINE_ERRORS as exc:
            raise BackendError("inspect of the server's own container failed", str(exc)) from exc
        if name in ((info.get("NetworkSettings") or {}).get("Networks") or {}):
            return
        try:
            self.client.api.connect_container_to_network(server.name, name)
        except ENGINE_ERRORS as exc:
            raise BackendError(f"joining network {name} failed", str(exc)) from exc
        log.info("docker: joined network %s as %s to reach the agents", name, server.name)

    def locate_server(self) -> ServerContainer | None:
        """Find this server's own container through the engine (blocking; once, at start-up, from
        `make_backend`). None when the server is not in a container or the engine does not run it (a
        server in a VM or container that has its own engine, like our CI machines: /.dockerenv is there,
        but nothing on that engine is us)."""
        if not self.settings.in_docker:
            return self._set_server(None)
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
        for cid in own_container_ids(mountinfo, socket.gethostname()):
            try:
                info = self.client.api.inspect_container(cid)
            except ENGINE_ERRORS:
                continue
            name = str(info.get("Name") or "").lstrip("/")
            if not name or not str(info.get("Id") or "").startswith(cid):
                continue
            mode = str((info.get("HostConfig") or {}).get("NetworkMode") or "")
            found = ServerContainer(name=name, host_network=mode == "host")
            log.info("docker: this server runs in container %s (network mode %s)", name, mode or "default")
            return self._set_server(found)
        log.info("docker: no container of this engine is this server; agents are dialled as from the host")
        return self._set_server(None)

    def _set_server(self, found: ServerContainer | None) -> ServerContainer | None:
        self._server = found
        self._server_located = True
        return found

    def server_container(self) -> ServerContainer | None:
        """`locate_server`'s answer, looked up now if it has not run (a backend built without
        `make_backend`)."""
        if not self._server_located:
            return self.locate_server()
        return self._server

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
        agent listens on the engine host's loopback and has no name on any network.

        Once `locate_server` has run, what the engine says about our own container decides: a server in a
        `--network host` container shares the host's loopback and dials the published port; a server the
        engine does not run (/.dockerenv, but its own engine, as on our CI machines) reaches it at
        127.0.0.1 too, unless MOLECULE_IN_DOCKER=true says the network is arranged some other way."""
        if self.settings.docker_host_network or not self.settings.in_docker:
            return url
        if self._server_located:
            server = self._server
            if server is not None and server.host_network:
                return url
            if server is None and self.settings.MOLECULE_IN_DOCKER is None:
                return url
        return f"http://{instance_name(ws_id)}:{AGENT_PORT}"
