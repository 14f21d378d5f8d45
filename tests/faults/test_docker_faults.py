"""Docker workspaces through a server killed with SIGKILL, and through a restarted engine (issue 11 §5).

Both run on a private `dockerd` of this module's own (tests/faults/services.py), so the orphan sweep may
run (it would reap other suites' containers on the shared engine) and the engine may be restarted.
Agents use host networking and register back to the server over loopback.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from tests.faults.conftest import ServerFactory
from tests.faults.services import Dockerd, ServerProcess
from tests.integration.provisioner_support import message_send

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(300)]

ADMIN = "faults-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
PROVISION_TIMEOUT = 30  # seconds a row may stay provisioning before the sweep fails it
SETTLE_DEADLINE = PROVISION_TIMEOUT + 40.0  # every workspace online or failed within this after the restart
WORKSPACE = "molecule.workspace.id"


@pytest.fixture
def engine(private_dockerd: Dockerd) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=private_dockerd.host, timeout=60)
    yield client
    for c in client.containers.list(all=True):  # nothing of this test survives it
        c.remove(force=True)
    client.volumes.prune()
    client.close()


def server_env(private_dockerd: Dockerd) -> dict[str, str]:
    return {
        "WORKSPACE_BACKEND": "docker",
        "DOCKER_HOST": private_dockerd.host,
        "DOCKER_NETWORK_MODE": "host",
        "MOLECULE_ENV": "",
        "ADMIN_TOKEN": ADMIN,
        "PROVISION_TIMEOUT_SECONDS": str(PROVISION_TIMEOUT),
        "PROVISION_SWEEP_INTERVAL": "1",
        "HEALTH_SWEEP_INTERVAL": "1",
        "ORPHAN_SWEEP_INTERVAL": "2",
        "LEADER_LEASE_TTL_SECONDS": "3",
        "LEADER_LEASE_RENEW_SECONDS": "1",
    }


class Container:
    def __init__(self, row: dict[str, Any]) -> None:
        self.id = str(row["Id"])
        self.name = str((row.get("Names") or ["?"])[0]).lstrip("/")
        self.status = str(row.get("State") or "")
        self.labels: dict[str, str] = row.get("Labels") or {}


def containers_of(engine: docker.DockerClient) -> dict[str, list[Container]]:
    """Workspace id → its containers (every labelled one, helpers included), from one list call (no
    inspect per container: the server may remove one between the two)."""
    out: dict[str, list[Container]] = {}
    for row in engine.api.containers(all=True):
        c = Container(row)
        out.setdefault(c.labels.get(WORKSPACE, "<unlabelled>"), []).append(c)
    return out


def wait(check: Any, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


class Api:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.http = httpx.Client(base_url=srv.url, headers=AUTH, timeout=15)

    def fast_heartbeats(self) -> None:
        """Agents beat every 2 s (a global secret reaches every container's env): a row put back to
        provisioning comes online at the next beat, well within the provision timeout."""
        r = self.http.post("/settings/secrets", json={"key": "HEARTBEAT_INTERVAL_SECONDS", "value": "2"})
        assert r.status_code == 200, r.text

    def create(self, name: str) -> str:
        r = self.http.post("/workspaces", json={"name": name, "runtime": "echo", "tier": 2})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def row(self, wid: str) -> dict[str, Any]:
        r = self.http.get("/workspaces")
        assert r.status_code == 200, r.text
        return next(dict(w) for w in r.json() if w["id"] == wid)

    def names(self) -> list[str]:
        return sorted(w["name"] for w in self.http.get("/workspaces").json())

    def event_types(self, wid: str) -> list[str]:
        r = self.http.get(f"/events/{wid}")
        assert r.status_code == 200, r.text
        return [e["event_type"] for e in reversed(r.json())]

    def a2a_echo(self, wid: str, text: str) -> str:
        r = self.http.post(f"/workspaces/{wid}/a2a", json=message_send(text))
        assert r.status_code == 200, r.text
        return str(r.json()["result"]["parts"][0]["text"])

    def settled(self, wid: str) -> str | None:
        status = self.row(wid)["status"]
        return status if status in ("online", "failed") else None


def running(engine: docker.DockerClient, wid: str) -> bool:
    return any(c.status == "running" for c in containers_of(engine).get(wid, []))


def check_settled(api: Api, engine: docker.DockerClient, wid: str, status: str) -> None:
    """Online: one running container that answers; failed: its event and message, and no container."""
    mine = containers_of(engine).get(wid, [])
    if status == "online":
        assert [c.name for c in mine] == [f"ws-{wid[:12]}"], [c.name for c in mine]
        assert mine[0].status == "running"
        assert api.a2a_echo(wid, "still there") == "still there"
    else:
        assert "WORKSPACE_PROVISION_FAILED" in api.event_types(wid)
        assert api.row(wid)["last_sample_error"]
        assert mine == [], f"a failed workspace keeps no container: {[c.name for c in mine]}"


def test_server_killed_while_creating_docker_workspaces(
    server_factory: ServerFactory, private_dockerd: Dockerd, engine: docker.DockerClient
) -> None:
    """kill -9 twice: right after a create's 201 (nothing in the engine yet); then once another create's
    container exists (created, perhaps started), with a third workspace running whose row is put back as
    a kill between its container's start and the url's write leaves it. After the last restart every
    workspace ends online or failed with its event, one row each, one container per online workspace,
    nothing else in the engine; the third is online and reachable through the platform (start-up
    adoption gives its row the url of its running container)."""
    srv = server_factory(**server_env(private_dockerd))
    try:
        killed_while_creating(srv, engine)
    finally:
        srv.stop()  # before the engine fixture's cleanup: a running server would restart what it removes


def killed_while_creating(srv: ServerProcess, engine: docker.DockerClient) -> None:
    api = Api(srv)
    api.fast_heartbeats()
    figures: list[str] = []

    early = api.create("Killed Early")
    had = bool(containers_of(engine).get(early))
    srv.kill()
    figures.append(f"killed right after the 201 (container existed: {had})")
    t = time.monotonic()
    srv.start()
    figures.append(f"restart {time.monotonic() - t:.1f}s")

    # the window between the container's start and the url's write, made certain: this one runs (the
    # agent may even have registered) but its row is put back as the crash would have left it
    unrecorded = api.create("Killed Before Url")
    wait(lambda: running(engine, unrecorded), "the unrecorded workspace's container running", 60)
    late = api.create("Killed Late")
    wait(lambda: containers_of(engine).get(late), "the late workspace's container", 60)
    state = containers_of(engine)[late][0].status
    srv.kill()
    figures.append(f"killed with the late container {state}")
    db = sqlite3.connect(srv.workdir / "ws.db")
    with db:
        db.execute("UPDATE workspaces SET status='provisioning', url='' WHERE id=?", (unrecorded,))
    db.close()
    restarted = time.monotonic()
    srv.start()
    api = Api(srv)

    settled: dict[str, str] = {}
    names = {early: "early", unrecorded: "unrecorded url", late: "late"}

    def settle() -> bool:
        for wid, name in names.items():
            if wid not in settled and (status := api.settled(wid)):
                settled[wid] = status
                figures.append(f"{name}: {status} {time.monotonic() - restarted:.1f}s after the restart")
        return len(settled) == len(names)

    wait(settle, "every workspace online or failed", SETTLE_DEADLINE)
    time.sleep(3)  # an orphan sweep pass (2 s) and a health pass (1 s) over the settled state
    print("\nFIGURES kill -9: " + "; ".join(figures))

    assert api.names() == ["Killed Before Url", "Killed Early", "Killed Late"]  # no duplicate, none lost
    assert settled[unrecorded] == "online"  # adopted: its running container's url, not the agent's claim
    assert api.row(unrecorded)["url"].startswith("http://127.0.0.1:")
    for wid, status in settled.items():
        check_settled(api, engine, wid, status)
    strays = {k: [c.name for c in v] for k, v in containers_of(engine).items() if k not in settled}
    assert not strays, f"containers of no workspace: {strays}"
    api.http.close()


def test_dockerd_restarted_while_workspaces_run(
    server_factory: ServerFactory, private_dockerd: Dockerd, engine: docker.DockerClient
) -> None:
    """The engine stops (SIGTERM: it stops every container, as a service restart does) and starts again.
    Meanwhile the server answers without a 5xx other than the A2A proxy's 502/503 for an unreachable
    agent; afterwards every workspace is online again and answers through the platform, with one
    container each, and no row lost. The first workspace's container is brought back by the engine's
    restart policy (or by the health sweep, if it saw it stopped first); the second's has no restart
    policy left, so the health sweep must notice it and restart the workspace."""
    srv = server_factory(**server_env(private_dockerd))
    try:
        engine_restarted(srv, private_dockerd, engine)
    finally:
        srv.stop()


def engine_restarted(srv: ServerProcess, private_dockerd: Dockerd, engine: docker.DockerClient) -> None:
    api = Api(srv)
    api.fast_heartbeats()
    ids = [api.create(f"Engine Restart {i}") for i in range(2)]
    for wid in ids:
        wait(lambda w=wid: api.settled(w), f"{wid} online", 90)
        assert api.row(wid)["status"] == "online", api.row(wid)
        assert api.a2a_echo(wid, "before") == "before"
    first = {wid: containers_of(engine)[wid][0].id for wid in ids}
    # the second one the engine will not bring back (as a container that fails on the engine's start):
    # only the health sweep can
    engine.containers.get(containers_of(engine)[ids[1]][0].id).update(restart_policy={"Name": "no"})

    t = time.monotonic()
    private_dockerd.stop()
    stopped_in = time.monotonic() - t
    answers: list[tuple[str, int, float]] = []
    down_until = time.monotonic() + 3
    while time.monotonic() < down_until:  # the engine is away: the API still answers, in time
        for kind, call in (
            ("list", lambda: api.http.get("/workspaces")),
            ("a2a", lambda: api.http.post(f"/workspaces/{ids[0]}/a2a", json=message_send("down"))),
        ):
            start = time.monotonic()
            r = call()
            answers.append((kind, r.status_code, time.monotonic() - start))
        time.sleep(0.2)
    t = time.monotonic()
    private_dockerd.start()
    restarted = time.monotonic()
    started_in = restarted - t

    back: dict[str, float] = {}

    def all_back() -> bool:
        for wid in ids:
            if wid in back:
                continue
            running = [c for c in containers_of(engine).get(wid, []) if c.status == "running"]
            if running and api.row(wid)["status"] == "online":
                r = api.http.post(f"/workspaces/{wid}/a2a", json=message_send("after"))
                if r.status_code == 200:
                    back[wid] = time.monotonic() - restarted
        return len(back) == len(ids)

    wait(all_back, "every workspace online and answering again", 90)
    time.sleep(3)  # a few health and orphan sweep passes over the recovered state

    assert srv.alive() and srv.starts == 1
    assert api.names() == ["Engine Restart 0", "Engine Restart 1"]  # no row lost, none added
    paths = []
    for wid in ids:
        check_settled(api, engine, wid, "online")
        types = api.event_types(wid)
        replaced = containers_of(engine)[wid][0].id != first[wid]
        paths.append("health sweep" if replaced else "restart policy")
        if replaced:  # the sweep's restart: offline, provisioning, online again, in that order
            off = types.index("WORKSPACE_OFFLINE")
            assert "WORKSPACE_PROVISIONING" in types[off:] and "WORKSPACE_ONLINE" in types[off:]
        assert api.row(wid)["status"] == "online"
    assert paths[1] == "health sweep"
    strays = {k: [c.name for c in v] for k, v in containers_of(engine).items() if k not in ids}
    assert not strays, f"containers of no workspace: {strays}"
    bad = [a for a in answers if a[1] >= 500 and not (a[0] == "a2a" and a[1] in (502, 503))]
    assert not bad, f"server errors while the engine was away: {bad}"
    slow = [a for a in answers if a[2] > 5]
    assert not slow, slow
    print(
        f"\nFIGURES dockerd restart: engine stop {stopped_in:.1f}s, start {started_in:.1f}s;"
        f" {len(answers)} requests while it was away (statuses {sorted({a[1] for a in answers})},"
        f" slowest {max(a[2] for a in answers) * 1000:.0f} ms); back online and answering after"
        f" {', '.join(f'{v:.1f}s' for v in back.values())} via {', '.join(paths)}"
    )
    api.http.close()
