"""The Swarm service of one workspace, built from the same inputs as the Docker backend's container:
the tier's limits, the mounts the docker volumes module chooses, the env of `build_env`. Pure functions
(no engine calls), so the translation is checked without a swarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from docker.types import (
    ContainerSpec,
    EndpointSpec,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
)

from workspace_server.config import Settings
from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MANAGED_LABEL,
    TOKEN_FILE,
    WORKSPACE_LABEL,
    BackendError,
    instance_name,
)
from workspace_server.provisioner.docker.engine import AGENT_PORT
from workspace_server.provisioner.tiers import MIB, T1_TMPFS, TierLimits

# The node label naming the node that holds a workspace's volumes (one label per node, set by the
# backend on the node its engine runs on); a service's constraint names that node's value.
VOLUME_NODE_LABEL = "molecule.volume-host"
# Task containers carry the workspace id under their own key, not MANAGED_LABEL: a Docker backend on the
# same engine lists containers by that label, and a task container is the service's, not its own.
TASK_WORKSPACE_LABEL = "molecule.swarm.workspace.id"
SERVICE_NODE_LABEL = "molecule.swarm.volume-node"  # the service remembers where its volumes are
IMAGE_LABEL = "molecule.image"  # the image ref the workspace asked for (the image refresh matches it)
STOP_GRACE_NS = 2_000_000_000  # the Docker backend force-removes; a short grace keeps stops as quick


@dataclass(frozen=True)
class Token:
    """A Swarm secret holding the workspace token, mounted as /configs/.auth_token."""

    secret_id: str
    secret_name: str
    uid: int
    gid: int


# Secret env values are Swarm secrets mounted here in the task; the env names the file (`<KEY>_FILE`)
SECRETS_DIR = "/run/secrets"
ENV_KEY_LABEL = "molecule.secret.env"  # on an env secret: the env key it holds (never the value)
SECRET_NAME_MAX = 64  # the engine's limit on a secret's name


@dataclass(frozen=True)
class EnvSecret:
    """A Swarm secret holding the value of the env key `key`, mounted as /run/secrets/<key>."""

    key: str
    secret_id: str
    secret_name: str
    uid: int
    gid: int


def env_secret_name(ws_id: str, key: str, version: str) -> str:
    """`ws-<id12>-env-<key>-<version>`: the workspace and key for an operator's `docker secret ls`, and a
    version new at each start, so an updated value is a new secret. DECIDE: a random version, not a hash
    of the value, which `docker secret ls` would show to anyone able to list secrets (a short or guessable
    value could be found from it)."""
    room = SECRET_NAME_MAX - len(f"{instance_name(ws_id)}-env--{version}")
    return f"{instance_name(ws_id)}-env-{key[:room]}-{version}"


def secret_env(env: Mapping[str, str], secrets: list[EnvSecret]) -> dict[str, str]:
    """The env the service carries: each secret key replaced by `<KEY>_FILE=/run/secrets/<KEY>`."""
    held = {s.key for s in secrets}
    out = {k: v for k, v in env.items() if k not in held}
    out.update({f"{s.key}_FILE": f"{SECRETS_DIR}/{s.key}" for s in secrets})
    return out


def parse_tier_constraints(raw: str) -> dict[int, list[str]]:
    """`SWARM_TIER_CONSTRAINTS`: `3=node.labels.trusted==true,node.role==worker;4=node.role==manager`."""
    out: dict[int, list[str]] = {}
    for part in raw.split(";"):
        part = part.strip()
        if not part:
            continue
        tier, sep, rules = part.partition("=")
        if not sep or not tier.strip().isdigit():
            raise ValueError(f"SWARM_TIER_CONSTRAINTS: {part!r} is not <tier>=<constraint>[,...]")
        out[int(tier)] = [r.strip() for r in rules.split(",") if r.strip()]
    return out


def mounts(volumes: Mapping[str, Mapping[str, str]], limits: TierLimits) -> list[Mount]:
    """The docker volumes module's `{source: {bind, mode}}` as service mounts (host paths are binds)."""
    out = [
        Mount(
            target=v["bind"],
            source=src,
            type="bind" if src.startswith("/") else "volume",
            read_only=v.get("mode") == "ro",
        )
        for src, v in volumes.items()
    ]
    if limits.read_only_rootfs:
        for target in T1_TMPFS:  # size and mode as the Docker backend's tmpfs option string
            out.append(Mount(target=target, source="", type="tmpfs", tmpfs_size=64 * MIB, tmpfs_mode=0o1777))
    return out


def placement(settings: Settings, tier: int, volume_node: str) -> list[str]:
    """The tier's operator-set constraints, and the node holding the workspace's volumes."""
    rules = list(parse_tier_constraints(settings.SWARM_TIER_CONSTRAINTS).get(tier, []))
    pin = f"node.labels.{VOLUME_NODE_LABEL}=={volume_node}"
    if volume_node and pin not in rules:
        rules.append(pin)
    return rules


def tier_volume_node(settings: Settings, tier: int) -> str:
    """The node a tier's constraints place new workspaces on (`node.labels.molecule.volume-host==w1`), or
    "" when they name none. DECIDE: the one constraint that chooses a node, because the backend must know
    the node before the service exists, to create and seed the volumes through that node's engine."""
    prefix = f"node.labels.{VOLUME_NODE_LABEL}=="
    for rule in parse_tier_constraints(settings.SWARM_TIER_CONSTRAINTS).get(tier, []):
        if rule.replace(" ", "").startswith(prefix):
            return rule.replace(" ", "")[len(prefix) :]
    return ""


def check_tier(limits: TierLimits) -> None:
    """DECIDE: Swarm services cannot be privileged or share the host PID namespace; a tier that asks for
    it is refused rather than run with less than it was granted."""
    if limits.privileged or limits.pid_host:
        raise BackendError(f"tier {limits.tier} needs a privileged container, which Swarm cannot run")


def service_kwargs(
    *,
    settings: Settings,
    name: str,
    ws_id: str,
    image: str,
    image_id: str,
    env: Mapping[str, str],
    limits: TierLimits,
    service_mounts: list[Mount],
    host_network: bool,
    port: int,
    token: Token | None,
    env_secrets: list[EnvSecret],
    volume_node: str,
    nano_cpu_cap: int,
) -> dict[str, Any]:
    """`APIClient.create_service` keyword arguments for one workspace."""
    check_tier(limits)
    secrets = []
    if token is not None:
        secrets.append(
            SecretReference(
                token.secret_id,
                token.secret_name,
                filename=f"{CONFIG_MOUNT}/{TOKEN_FILE}",
                uid=str(token.uid),
                gid=str(token.gid),
                mode=0o600,  # as the Docker backend writes .auth_token
            )
        )
    for held in env_secrets:
        secrets.append(
            SecretReference(
                held.secret_id,
                held.secret_name,
                filename=held.key,  # relative: /run/secrets/<key>
                uid=str(held.uid),
                gid=str(held.gid),
                mode=0o400,
            )
        )
    labels = {
        MANAGED_LABEL: "true",
        WORKSPACE_LABEL: ws_id,
        SERVICE_NODE_LABEL: volume_node,
        IMAGE_LABEL: image,
    }
    container = ContainerSpec(
        # DECIDE: the image by the id our pull policy resolved on this node. A task's preparation pulls
        # any tag again (a registry round trip per start, and offline the wait for it to fail) but never
        # an image id: the moving-tag rule is applied once, by us, as in the Docker backend.
        image_id or image,
        env=[f"{k}={v}" for k, v in secret_env(env, env_secrets).items()],
        labels={TASK_WORKSPACE_LABEL: ws_id},
        mounts=service_mounts,
        secrets=secrets,
        read_only=limits.read_only_rootfs or None,
        cap_drop=["ALL"] if limits.read_only_rootfs else None,
        stop_grace_period=STOP_GRACE_NS,
        hosts=None if host_network else {"host.docker.internal": "host-gateway"},
    )
    template = TaskTemplate(
        container,
        # limits only, no reservations: a reservation of T3/T4's size would leave small nodes unable to
        # place anything (the Docker backend clamps to the engine's CPUs the same way)
        resources=Resources(cpu_limit=min(limits.nano_cpus, nano_cpu_cap), mem_limit=limits.memory_mb * MIB),
        # DECIDE (docs/decisions.md "Swarm backend"): the health sweep owns restarts, so Swarm's is off
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=placement(settings, limits.tier, volume_node)),
        networks=["host" if host_network else settings.SWARM_NETWORK],
    )
    kwargs: dict[str, Any] = {
        "task_template": template,
        "name": name,
        "labels": labels,
        "mode": ServiceMode("replicated", replicas=1),
    }
    if not host_network:
        # host publish mode: the routing mesh's ingress answers no loopback client on a node advertised
        # as 127.0.0.1, and a host-mode port stays on the node that holds the workspace anyway
        kwargs["endpoint_spec"] = EndpointSpec(ports={port: (AGENT_PORT, "tcp", "host")})
    return kwargs
