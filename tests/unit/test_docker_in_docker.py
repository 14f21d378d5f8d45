"""MOLECULE_IN_DOCKER: how the Docker backend finds the server's own container and what follows from it
(tests/e2e/test_server_image.py runs the real thing)."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from workspace_server.config import Settings
from workspace_server.provisioner.docker import DockerBackend
from workspace_server.provisioner.docker.engine import ServerContainer
from workspace_server.provisioner.docker.networks import own_container_ids
from workspace_server.provisioner.tiers import tier_limits

CID = "3f" * 32
WS = "0123456789ab-cdef-4000-8000-000000000000"
PUBLISHED = "http://127.0.0.1:32768"
BY_NAME = "http://ws-0123456789ab:8000"


def test_own_container_ids_from_mounts_then_default_hostname() -> None:
    mountinfo = (
        f"812 790 0:45 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf rw - ext4 x rw\n"
        f"813 790 0:45 /containers/{CID}/hostname /etc/hostname rw - ext4 x rw\n"
        "814 790 0:45 / /proc rw - proc proc rw\n"
    )
    assert own_container_ids(mountinfo, "3f3f3f3f3f3f") == [CID, "3f3f3f3f3f3f"]
    assert own_container_ids("", "molecule-server") == []  # a chosen hostname is not an id
    assert own_container_ids("", "vm") == []


class FakeAPI:
    def __init__(self, containers: dict[str, dict[str, Any]]) -> None:
        self.containers = containers
        self.connected: list[tuple[str, str]] = []

    def inspect_container(self, ref: str) -> dict[str, Any]:
        for info in self.containers.values():
            if info["Id"].startswith(ref) or info["Name"] == "/" + ref:
                return info
        raise docker.errors.NotFound("no such container")

    def connect_container_to_network(self, container: str, net: str) -> None:
        self.connected.append((container, net))


class FakeNetworks:
    def get(self, name: str) -> object:
        return object()


def backend(settings: Settings, api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> DockerBackend:
    monkeypatch.setattr("socket.gethostname", lambda: CID[:12])
    client: Any = type("Client", (), {"api": api, "networks": FakeNetworks()})()
    return DockerBackend(settings, client=client)


def server_info(mode: str, networks: tuple[str, ...] = ("bridge",)) -> dict[str, Any]:
    return {
        "Id": CID,
        "Name": "/molecule-server",
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": {n: {} for n in networks}},
    }


def test_bridged_server_joins_the_agents_network_and_is_named_to_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeAPI({CID: server_info("bridge")})
    settings = Settings(
        MOLECULE_IN_DOCKER=None, DOCKER_NETWORK_MODE="bridge", DOCKER_NETWORK="agents", PORT=8080
    )
    monkeypatch.setattr(Settings, "in_docker", property(lambda self: True))
    b = backend(settings, api, monkeypatch)
    assert b.locate_server() == ServerContainer(name="molecule-server", host_network=False)
    kw, extra = b._network_kwargs(tier_limits(settings, 2), 32768)
    assert kw["network"] == "agents"
    assert api.connected == [("molecule-server", "agents")]
    assert extra["PLATFORM_URL"] == extra["MOLECULE_URL"] == "http://molecule-server:8080"
    assert b.dial_url(WS, PUBLISHED) == BY_NAME


def test_an_operator_platform_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeAPI({CID: server_info("bridge", ("agents",))})
    settings = Settings(
        MOLECULE_IN_DOCKER=True,
        DOCKER_NETWORK_MODE="bridge",
        DOCKER_NETWORK="agents",
        PLATFORM_URL="http://cp:1",
    )
    b = backend(settings, api, monkeypatch)
    _, extra = b._network_kwargs(tier_limits(settings, 2), 32768)
    assert "PLATFORM_URL" not in extra  # build_env takes it from the orchestrator's spec
    assert api.connected == []  # already on the agents' network


def test_host_network_server_dials_published_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(MOLECULE_IN_DOCKER=True, DOCKER_NETWORK_MODE="bridge")
    b = backend(settings, FakeAPI({CID: server_info("host")}), monkeypatch)
    assert b.locate_server() == ServerContainer(name="molecule-server", host_network=True)
    assert b.dial_url(WS, PUBLISHED) == PUBLISHED


@pytest.mark.parametrize(("explicit", "dialled"), [(None, PUBLISHED), (True, BY_NAME)])
def test_server_the_engine_does_not_run(
    monkeypatch: pytest.MonkeyPatch, explicit: bool | None, dialled: str
) -> None:
    """/.dockerenv but an engine of its own (our CI machines): nothing there is us, so the published port
    is dialled; MOLECULE_IN_DOCKER=true keeps the container-name rewrite (the operator arranged it)."""
    settings = Settings(MOLECULE_IN_DOCKER=explicit, DOCKER_NETWORK_MODE="bridge")
    monkeypatch.setattr(Settings, "in_docker", property(lambda self: True))
    b = backend(settings, FakeAPI({}), monkeypatch)
    assert b.locate_server() is None
    assert b.dial_url(WS, PUBLISHED) == dialled
