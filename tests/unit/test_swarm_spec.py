"""The Swarm service spec of a workspace, built without a swarm (provisioner/swarm/spec.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workspace_server.config import Settings
from workspace_server.provisioner.base import BackendError
from workspace_server.provisioner.swarm import SwarmBackend
from workspace_server.provisioner.swarm import spec as svc
from workspace_server.provisioner.tiers import tier_limits


def build(settings: Settings, tier: int = 2, **kw: Any) -> dict[str, Any]:
    limits = tier_limits(settings, tier)
    base: dict[str, Any] = {
        "settings": settings,
        "name": "ws-abc",
        "ws_id": "abc-full-id",
        "image": "molecule/workspace-agent:latest",
        "image_id": "sha256:1234",
        "env": {"A": "1"},
        "limits": limits,
        "service_mounts": svc.mounts({"ws-abc-configs": {"bind": "/configs", "mode": "rw"}}, limits),
        "host_network": False,
        "port": 40001,
        "token": svc.Token("sid", "ws-abc-token-x", 1000, 1000),
        "env_secrets": [],
        "volume_node": "node-a",
        "nano_cpu_cap": 2_000_000_000,
    }
    base.update(kw)
    return svc.service_kwargs(**base)


def test_tier_constraints_parse() -> None:
    assert svc.parse_tier_constraints("") == {}
    assert svc.parse_tier_constraints(" 3=node.labels.a==1, node.role==worker ;4=node.role==manager") == {
        3: ["node.labels.a==1", "node.role==worker"],
        4: ["node.role==manager"],
    }
    with pytest.raises(ValueError, match="SWARM_TIER_CONSTRAINTS"):
        svc.parse_tier_constraints("x=node.role==worker")
    with pytest.raises(ValueError, match="SWARM_TIER_CONSTRAINTS"):  # at construction, not at a start
        SwarmBackend(Settings(SWARM_TIER_CONSTRAINTS="node.role==worker"), client=SimpleNamespace())


def test_service_spec_of_a_bridge_workspace() -> None:
    kw = build(Settings(SWARM_TIER_CONSTRAINTS="2=node.labels.pool==agents"))
    assert kw["name"] == "ws-abc" and kw["mode"] == {"replicated": {"Replicas": 1}}
    assert kw["labels"] == {
        "molecule.platform.managed": "true",
        "molecule.workspace.id": "abc-full-id",
        "molecule.swarm.volume-node": "node-a",
        "molecule.image": "molecule/workspace-agent:latest",
    }
    task = kw["task_template"]
    container = task["ContainerSpec"]
    assert container["Image"] == "sha256:1234"  # by id: the task's preparation pulls nothing
    assert container["Env"] == ["A=1"]
    assert container["Labels"] == {"molecule.swarm.workspace.id": "abc-full-id"}
    assert container["Secrets"] == [
        {
            "SecretID": "sid",
            "SecretName": "ws-abc-token-x",
            "File": {"Name": "/configs/.auth_token", "UID": "1000", "GID": "1000", "Mode": 0o600},
        }
    ]
    assert container["Hosts"] == ["host-gateway host.docker.internal"]
    assert task["RestartPolicy"]["Condition"] == "none"  # the health sweep owns restarts
    assert task["Placement"]["Constraints"] == [
        "node.labels.pool==agents",
        "node.labels.molecule.volume-host==node-a",
    ]
    assert task["Resources"] == {"Limits": {"NanoCPUs": 1_000_000_000, "MemoryBytes": 512 * 1024 * 1024}}
    assert task["Networks"] == [{"Target": "molecule-swarm-net"}]
    assert kw["endpoint_spec"]["Ports"] == [
        {"Protocol": "tcp", "PublishedPort": 40001, "TargetPort": 8000, "PublishMode": "host"}
    ]


def test_secret_env_values_are_files_not_env() -> None:
    held = svc.EnvSecret("OPENAI_API_KEY", "sid2", "ws-abc-env-OPENAI_API_KEY-v1", 1000, 1001)
    kw = build(Settings(), env={"A": "1", "OPENAI_API_KEY": "sk-value"}, env_secrets=[held])
    container = kw["task_template"]["ContainerSpec"]
    assert container["Env"] == ["A=1", "OPENAI_API_KEY_FILE=/run/secrets/OPENAI_API_KEY"]
    assert "sk-value" not in repr(kw)  # the value is only in the secret, never in the service spec
    assert container["Secrets"][1] == {
        "SecretID": "sid2",
        "SecretName": "ws-abc-env-OPENAI_API_KEY-v1",
        "File": {"Name": "OPENAI_API_KEY", "UID": "1000", "GID": "1001", "Mode": 0o400},
    }


def test_env_secret_names() -> None:
    ws_id = "0123456789abcdef-rest"
    assert svc.env_secret_name(ws_id, "OPENAI_API_KEY", "a1b2c3d4e5f6") == (
        "ws-0123456789ab-env-OPENAI_API_KEY-a1b2c3d4e5f6"
    )
    long = svc.env_secret_name(ws_id, "K" * 200, "a1b2c3d4e5f6")  # within the engine's 64 characters
    assert len(long) == 64 and long.startswith("ws-0123456789ab-env-KKK") and long.endswith("-a1b2c3d4e5f6")


def test_host_network_and_tier1() -> None:
    settings = Settings()
    limits = tier_limits(settings, 1)
    mounts = svc.mounts(
        {"ws-abc-configs": {"bind": "/configs", "mode": "rw"}, "/srv/x": {"bind": "/w", "mode": "ro"}}, limits
    )
    kw = build(settings, tier=1, host_network=True, token=None, service_mounts=mounts)
    task = kw["task_template"]
    assert task["Networks"] == [{"Target": "host"}] and "endpoint_spec" not in kw
    container = task["ContainerSpec"]
    assert "Secrets" not in container or container["Secrets"] == []
    assert container["ReadOnly"] is True and container["CapabilityDrop"] == ["ALL"]
    assert [(m["Target"], m["Type"], m.get("ReadOnly", False)) for m in container["Mounts"]] == [
        ("/configs", "volume", False),
        ("/w", "bind", True),
        ("/tmp", "tmpfs", False),
    ]
    assert task["Resources"]["Limits"]["NanoCPUs"] == 500_000_000


def test_cpu_clamped_and_privileged_refused() -> None:
    kw = build(Settings(), tier=4, nano_cpu_cap=2_000_000_000)
    assert kw["task_template"]["Resources"]["Limits"]["NanoCPUs"] == 2_000_000_000
    with pytest.raises(BackendError, match="tier 3 needs a privileged container"):
        build(Settings(ALLOW_PRIVILEGED_TIERS=True), tier=3)


def test_node_engines_setting() -> None:
    s = Settings(SWARM_NODE_ENGINES=" w1=unix:///run/w1/docker.sock ; gpu.2=ssh://ops@node2 ;")
    assert s.swarm_node_engines == {"w1": "unix:///run/w1/docker.sock", "gpu.2": "ssh://ops@node2"}
    assert Settings().swarm_node_engines == {}
    for bad in (
        "w1",
        "=unix:///x",
        "w 1=unix:///x",
        "w1=/run/docker.sock",
        "w1=tcp://",
        "a=tcp://h;a=tcp://i",
    ):
        with pytest.raises(ValueError, match="SWARM_NODE_ENGINES"):  # at start-up, not at a workspace's start
            Settings(SWARM_NODE_ENGINES=bad)


def test_the_tier_constraint_that_picks_a_node() -> None:
    s = Settings(SWARM_TIER_CONSTRAINTS="2=node.role==worker, node.labels.molecule.volume-host == w1;3=x==y")
    assert svc.tier_volume_node(s, 2) == "w1"
    assert svc.tier_volume_node(s, 3) == "" and svc.tier_volume_node(s, 1) == ""
    # the pin is not repeated when the tier already names the node
    rules = svc.placement(Settings(SWARM_TIER_CONSTRAINTS="2=node.labels.molecule.volume-host==w1"), 2, "w1")
    assert rules == ["node.labels.molecule.volume-host==w1"]


def test_a_task_on_another_node_is_dialled_there() -> None:
    settings = Settings(MOLECULE_IN_DOCKER=False, DOCKER_NETWORK_MODE="bridge")
    b = SwarmBackend(settings, client=SimpleNamespace())
    url = "http://127.0.0.1:40001"
    assert b.dial_url("ws-a", url) == url  # the manager's own node: its loopback, as on one node
    b._dial_hosts["ws-a"] = "198.18.0.3"  # what start / adoption read from the manager (nodes.py)
    assert b.dial_url("ws-a", url) == "http://198.18.0.3:40001"
    b.settings.MOLECULE_IN_DOCKER = True  # a server inside the swarm dials the service name, first
    assert b.dial_url("ws-a", url) == "http://ws-ws-a:8000"
