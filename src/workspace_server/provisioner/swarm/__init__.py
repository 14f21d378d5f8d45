"""The Docker Swarm backend (issue 14 §2): one Swarm service, one replica, per workspace.

Each workspace is the service `ws-<id12>` (labelled like the Docker backend's containers), on the
attachable overlay network `SWARM_NETWORK` with its agent port published in host mode, or on the host
network (DOCKER_NETWORK_MODE=host, or T4 with ALLOW_PRIVILEGED_TIERS), where the agent binds
`127.0.0.1:<port>` itself as in the Docker backend. Either way `start` returns `http://127.0.0.1:<port>`.

What Swarm gives, used (docs/decisions.md "Swarm backend"):
- the workspace token is a Swarm secret (encrypted in the raft log), a new one per start, mounted as
  /configs/.auth_token (0600, the image user); the other config files are written into the configs
  volume before the service exists, through a never-started helper container (docker/files.py);
- each secret env value (`StartSpec.secret_keys`) is a Swarm secret too, mounted at /run/secrets/<KEY>,
  the service env naming it as `<KEY>_FILE` (the agent reads it at start); none is in the service spec;
- the tier's limits are the task's resource limits; `SWARM_TIER_CONSTRAINTS` adds placement
  constraints per tier; every service is pinned, by the node label `molecule.volume-host`, to the node
  holding its volumes (the node of the engine this server talks to);
- the service's restart policy is off: the health sweep owns restarts, as one owner.

Moving tags are re-pulled on that node before the service is created (the Docker backend's pull policy),
and the service names the tag, so its task uses the node's fresh local copy: no registry is asked.

Reused from the Docker backend, not copied: volumes, pulls, exec/terminal/logs, the files API, chat
files, the addresses (`shares_host_network`, `network_url`: the service name on the overlay network,
`dial_url`: the service name when this server itself runs as a service on that network).

Several nodes (SWARM_NODE_ENGINES, nodes.py): a workspace's volumes, pull policy, exec/files/logs go
through the engine of the node holding its volumes (chosen by a tier's `molecule.volume-host`
constraint, then pinned), and `dial_url` maps the stored url to that node's address.

Modules: spec.py (the service spec, pure), tasks.py (the task container on a node), nodes.py (which
node, its engine, its address), services.py (start/stop/state/inventories), backend.py (the
composition).
"""

from __future__ import annotations

import anyio.to_thread

from workspace_server.config import Settings
from workspace_server.provisioner.swarm.backend import SwarmBackend


def _is_manager(settings: Settings) -> bool:
    import docker
    import requests

    from workspace_server.provisioner.docker import make_client

    try:
        client = make_client(settings, timeout=5)
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    try:
        swarm = client.info().get("Swarm") or {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    finally:
        client.close()


async def swarm_manager_answers(settings: Settings) -> bool:
    """The engine answers and is an active swarm manager (services can only be created on one)."""
    return await anyio.to_thread.run_sync(_is_manager, settings)


__all__ = ["SwarmBackend", "swarm_manager_answers"]
