"""A workspace on a worker node of a two-node swarm, placed there by a tier constraint and reached there
(issue 14 §2, multi-node; docs/operations.md "Docker Swarm").

The swarm is the test's own (tests/integration/swarm_netns.py): a manager and a worker `dockerd`, each in
a network namespace the test creates, on a 198.18.N.0/24 link with the host. The real app runs on the
host, bound to the host's end of that link (the agent on the worker registers there), with
`DOCKER_HOST` = the manager's socket, `SWARM_NODE_ENGINES` = the worker's socket, and tier 2 constrained
to the worker's `molecule.volume-host` label. Create → the task runs on the worker node, its volumes are
the worker's → the agent registers and answers A2A through the server (dialled at the worker's address)
→ exec/files/logs through the worker's engine → a fresh backend adopts it at the same address → a
restart lands on the worker again (its volumes pin it) → delete removes the service and the worker's
volumes.

It needs root, iproute2, util-linux and dockerd; where any is missing it fails with the reason rather
than skip (the single-node suite covers the rest without them). The host engine and its swarm are not
touched, so it runs beside the single-node suite and other sessions. ~30-60 s here, most of it the
image load and the agent's start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.conftest import LiveServer, make_settings
from tests.integration.orchestrator_support import ADMIN, Platform
from tests.integration.provisioner_support import AGENT_IMAGE
from tests.integration.swarm_netns import WORKER_LABEL, Rig, RigError, missing_capability
from workspace_server.provisioner.docker import configs_volume, workspace_volume
from workspace_server.provisioner.swarm import SwarmBackend

pytestmark = pytest.mark.docker

BUDGET_SECONDS = 180.0


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    why = missing_capability()
    if why is not None:
        pytest.fail(f"the multi-node swarm test cannot run on this machine: {why}")
    host = docker.from_env(timeout=30)
    try:
        host.images.get(AGENT_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"the multi-node swarm test needs {AGENT_IMAGE} on the host engine (make runtime-image)")
    finally:
        host.close()
    r = Rig()
    try:
        try:
            r.setup(AGENT_IMAGE)
        except RigError as exc:
            logs = "\n".join(f"--- {n.name}\n{r.log_tail(n)}" for n in r.nodes.values() if n.proc)
            pytest.fail(f"setting up the two-node swarm failed: {exc}\n{logs}")
        yield r
    finally:
        problems = r.teardown()
        print(f"multi-node rig {r.prefix} ({r.subnet}): {r.timings}; teardown: {problems or 'clean'}")
        left = [p for p in problems if "left" not in p and "SIGKILL" not in p]
        assert not left, f"teardown of the multi-node rig left things behind: {left}"


def volumes(client: Any) -> set[str]:
    return {v.name for v in client.volumes.list()}


async def test_workspace_runs_on_the_worker_and_answers_through_the_server(rig: Rig, tmp_path: Path) -> None:
    started_at = time.monotonic()
    manager = docker.DockerClient(base_url=rig.manager.sock, timeout=60)
    worker = docker.DockerClient(base_url=rig.worker.sock, timeout=60)
    worker_node = str(worker.info()["Swarm"]["NodeID"])
    settings = make_settings(
        f"sqlite:///{tmp_path}/ws.db",
        tmp_path,
        WORKSPACE_BACKEND="swarm",
        DOCKER_HOST=rig.manager.sock,
        SWARM_NODE_ENGINES=f"{WORKER_LABEL}={rig.worker.sock}",
        SWARM_TIER_CONSTRAINTS=f"2=node.labels.molecule.volume-host=={WORKER_LABEL}",
        SWARM_NETWORK="molecule-mn-net",
        DOCKER_NETWORK_MODE="bridge",  # the overlay, a host-mode published port on the worker
        MOLECULE_IN_DOCKER=False,
        HOST=rig.host_addr,
        ADMIN_TOKEN=ADMIN,
        ORPHAN_SWEEP_INTERVAL=0,
        HEALTH_SWEEP_INTERVAL=0.5,
        LEADER_LEASE_RENEW_SECONDS=0.5,
    )
    # bound to the host's end of the link: the agent on the worker registers at PLATFORM_URL
    srv = LiveServer(settings, host=rig.host_addr)
    settings.PLATFORM_URL, settings.PORT = srv.url, srv.port
    await asyncio.to_thread(srv.start)
    p = Platform(srv, settings)
    try:
        wid = await p.create("Echo Agent", tier=2)
        view = await p.wait_status(wid, "online")
        online_after = time.monotonic() - started_at
        url = view["url"]
        assert url.startswith("http://127.0.0.1:")  # the stored form, as on one node
        port = int(url.rsplit(":", 1)[1])
        name = f"ws-{wid[:12]}"

        # placed on the worker by the tier's constraint, and only there
        service = manager.services.get(name)
        template = service.attrs["Spec"]["TaskTemplate"]
        constraints = template["Placement"]["Constraints"]
        assert f"node.labels.molecule.volume-host=={WORKER_LABEL}" in constraints
        running = [t for t in service.tasks() if t["Status"]["State"] == "running"]
        assert [t["NodeID"] for t in running] == [worker_node]
        # the image by id: the copy `docker load` put on the worker, the same id as the host's
        assert template["ContainerSpec"]["Image"] == worker.images.get(AGENT_IMAGE).id
        task_label = {"label": f"com.docker.swarm.service.name={name}"}
        on_worker = worker.containers.list(filters=task_label)
        assert len(on_worker) == 1
        assert manager.containers.list(all=True) == []  # nothing of it on the manager's engine
        assert {configs_volume(wid)} <= volumes(worker)  # seeded through the worker's engine
        assert configs_volume(wid) not in volumes(manager)

        # the server dials the worker's address (the manager's view of the task's node)
        backend = p.ctx.backend
        assert backend.dial_url(wid, url) == f"http://{rig.worker.addr}:{port}"
        r = await p.a2a(wid, "across the nodes")
        assert r.status_code == 200, r.text
        assert r.json()["result"]["parts"][0]["text"] == "across the nodes"

        # exec, files and logs reach the task container through the worker's engine
        res = await backend.exec(wid, ["cat", "/configs/config.yaml"])
        assert res.exit_code == 0 and b"Echo Agent" in res.stdout
        assert (await backend.exec(wid, ["hostname"])).stdout.strip() == on_worker[0].id[:12].encode()
        assert b"Echo Agent" in (await backend.read_file(wid, "/configs/config.yaml") or b"")
        assert isinstance(await backend.logs(wid, tail=20), str)
        r = await p.http.get(f"/workspaces/{wid}/files/config.yaml")
        assert r.status_code == 200 and "Echo Agent" in r.text, r.text

        # a restarted server adopts it and dials the same node
        fresh = SwarmBackend(settings)
        try:
            assert await fresh.instance_url(wid) == url
            assert fresh.dial_url(wid, url) == f"http://{rig.worker.addr}:{port}"
        finally:
            await fresh.close()

        # a restart goes back to the node holding its volumes, the config still there
        r = await p.http.post(f"/workspaces/{wid}/restart")
        assert r.status_code == 200 and r.json()["config_dir"] == "existing-volume", r.text
        view = await p.wait_status(wid, "online")
        running = [t for t in manager.services.get(name).tasks() if t["Status"]["State"] == "running"]
        assert [t["NodeID"] for t in running] == [worker_node]
        r = await p.a2a(wid, "after a restart")
        assert r.status_code == 200 and r.json()["result"]["parts"][0]["text"] == "after a restart", r.text

        r = await p.http.delete(f"/workspaces/{wid}?purge=true")
        assert (r.status_code, r.json()) == (200, {"cascade_deleted": 0, "status": "purged"})
        assert manager.services.list(filters={"name": name}) == []
        assert worker.containers.list(all=True, filters=task_label) == []
        assert not {configs_volume(wid), workspace_volume(wid)} & volumes(worker)
        total = time.monotonic() - started_at
        print(f"multi-node: online after {online_after:.1f}s, whole test {total:.1f}s, rig {rig.timings}")
        assert total < BUDGET_SECONDS
    finally:
        await p.close()
        manager.close()
        worker.close()
