"""Several `workspace-server serve` replicas on one Postgres + Redis keep the single-server guarantees
(issue 14 §1): events reach every replica's clients once, one leader runs the loops and a kill -9 of it
hands them over within the lease TTL, a due schedule fires once across replicas and across the failover,
a queued A2A call is delivered once whichever replica sees the agent free, a create is provisioned once.

Postgres only: the SQLite default is single-process by design (in-process bus, no Redis).
Every wait is a poll with a deadline; the loop timings are shortened (replica_support.replica_env).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa
from websockets.asyncio.client import connect

from tests.conftest import free_port
from tests.integration.a2a_support import StubAgent, message
from tests.integration.replica_support import (
    ADMIN_H,
    LEASE_RENEW,
    LEASE_TTL,
    SCHEDULER_INTERVAL,
    SRC,
    Replica,
    execute,
    heartbeat,
    lease_holder_pid,
    poll,
    query,
    replica_env,
    seed,
    sse_events,
    wait_all_ready,
)
from workspace_server.common.time import utcnow
from workspace_server.db.schema import a2a_queue, activity_logs, structure_events, workspace_schedules

WAIT = 30.0  # guards against hanging, never an assertion about speed
# kill -9 → a survivor holds the lease: the dead holder's lease runs out at most TTL after its last renew
# (which was before the kill), and a survivor tries every RENEW seconds; the rest is polling and a loaded
# machine's scheduling.
TAKEOVER_BOUND = LEASE_TTL + LEASE_RENEW + 2.0
QUIET = 4 * SCHEDULER_INTERVAL  # long enough for a duplicate fire or drain to show up, if one happened

Replicas = Callable[..., list[Replica]]


@pytest.fixture
def replicas(
    request: pytest.FixtureRequest, db_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Replicas]:
    """`start(n, workers=0, **env)` → n replicas (each `serve --workers` when given), ready; all
    stopped at the end (the killed ones are just reaped)."""
    if request.node.callspec.params.get("db_url") == "sqlite":
        pytest.skip("replicas share state through Postgres + Redis; the SQLite default is single-process")
    started: list[Replica] = []

    def start(n: int, *, workers: int = 0, **env: str) -> list[Replica]:
        data_dir = tmp_path / "data"  # one host: the replicas share it (the process backend's pidfiles)
        group = [
            Replica(
                chr(ord("a") + i),
                lambda port: replica_env(db_url, redis_url, data_dir, port, **env),
                tmp_path,
                workers=workers,
            )
            for i in range(n)
        ]
        started.extend(group)
        wait_all_ready(group)
        return group

    yield start
    for r in started:
        r.stop()


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


def owner(group: list[Replica], pid: int | None) -> Replica | None:
    return next((r for r in group if pid in r.pids), None)


# ---- events ----


async def test_events_caused_through_b_and_c_reach_websocket_and_sse_clients_of_a(
    replicas: Replicas, db_url: str
) -> None:
    a, b, c = replicas(3)
    ws_id, _ = await seed(db_url)
    seen: dict[str, list[str]] = {"ws": [], "sse": []}

    async def read_ws() -> None:
        async with connect(a.ws_url) as sock:
            while True:
                frame = json.loads(await sock.recv())
                if frame["workspace_id"] == ws_id:  # other suites share this Redis channel
                    seen["ws"].append(frame["payload"]["message"])

    async def read_sse(client: httpx.AsyncClient) -> None:
        async for frame in sse_events(client, "/events/stream"):
            if frame["data"].get("workspace_id") == ws_id:
                seen["sse"].append(frame["data"]["message"])

    async def notify(via: Replica, text: str) -> None:
        r = await http[via.name].post(f"/workspaces/{ws_id}/notify", json={"message": text}, headers=ADMIN_H)
        assert r.status_code == 200, r.text

    async with (
        httpx.AsyncClient(base_url=a.url, timeout=WAIT) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=WAIT) as http_b,
        httpx.AsyncClient(base_url=c.url, timeout=WAIT) as http_c,
    ):
        http = {"a": http_a, "b": http_b, "c": http_c}
        readers = [asyncio.create_task(read_ws()), asyncio.create_task(read_sse(http_a))]
        try:
            # Both clients are subscribed once a warm-up event reached each (a subscription has no ack).
            async def subscribed() -> bool:
                await notify(b, "warm-up")
                await asyncio.sleep(0.2)
                return all("warm-up" in got for got in seen.values())

            await poll(subscribed, "A's clients to subscribe", WAIT)
            for got in seen.values():
                got.clear()
            await notify(b, "from B")
            await notify(c, "from C")
            await notify(b, "marker")
            await poll(lambda: _ready(all("marker" in got for got in seen.values())), "the marker on A", WAIT)
        finally:
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    # Each event once on each client: replicas publish once and each delivers what its subscriber reads.
    for got in seen.values():
        counted = Counter(m for m in got if m != "warm-up")
        assert counted == Counter({"from B": 1, "from C": 1, "marker": 1}), got


async def _ready(value: Any) -> Any:
    return value


# ---- leader, sweepers, scheduler ----


async def test_one_leader_fires_a_due_schedule_once_and_a_kill_9_hands_over_within_the_ttl(
    replicas: Replicas, db_url: str, agent: StubAgent
) -> None:
    group = replicas(3)
    ws_id, token = await seed(db_url, agent.url)

    leader = owner(group, await poll(lambda: lease_holder_pid(db_url), "a leader", WAIT))
    assert leader is not None, "the lease holder is not one of the replicas"
    # The lease stays with one replica while it lives: the others' renewals never win it.
    deadline = time.monotonic() + 4 * LEASE_RENEW
    while time.monotonic() < deadline:
        assert owner(group, await lease_holder_pid(db_url)) is leader
        await asyncio.sleep(0.1)

    async with httpx.AsyncClient(base_url=group[1].url, timeout=WAIT) as http:
        body = {"name": "yearly", "cron_expr": "0 0 1 1 *", "prompt": "tick"}
        r = await http.post(
            f"/workspaces/{ws_id}/schedules", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 201, r.text
        schedule_id = r.json()["id"]

    async def make_due() -> None:
        past = utcnow().replace(microsecond=0)
        stmt = sa.update(workspace_schedules).where(workspace_schedules.c.id == schedule_id)
        await execute(db_url, stmt.values(next_run_at=past))

    async def fired(n: int) -> bool:
        return len(agent.processed) >= n

    # Three schedulers' worth of replicas, every 0.5 s: the due slot is fired once.
    await make_due()
    await poll(lambda: fired(1), "the schedule to fire", WAIT)
    await asyncio.sleep(QUIET)
    assert len(agent.processed) == 1
    await poll(lambda: _cron_runs(db_url, ws_id, 1), "its cron_run row", WAIT)

    # kill -9 the leader; the slot made due at once is fired by the survivor that takes over, once.
    leader.kill()
    killed_at = time.monotonic()
    await make_due()
    survivors = [r for r in group if r is not leader]

    async def new_leader() -> Replica | None:
        return owner(survivors, await lease_holder_pid(db_url))

    successor = await poll(new_leader, "a survivor to take the lease", WAIT)
    took = time.monotonic() - killed_at
    assert took <= TAKEOVER_BOUND, f"takeover took {took:.1f}s (TTL {LEASE_TTL}s)"
    await poll(lambda: fired(2), "the schedule to fire after the failover", WAIT)
    await asyncio.sleep(QUIET)
    assert len(agent.processed) == 2
    await poll(lambda: _cron_runs(db_url, ws_id, 2), "the second cron_run row", WAIT)
    (row,) = await query(
        db_url, sa.select(workspace_schedules).where(workspace_schedules.c.id == schedule_id)
    )
    assert (row.run_count, row.last_status) == (2, "ok")
    assert successor in survivors
    print(f"FIGURES takeover={took:.2f}s ttl={LEASE_TTL}s renew={LEASE_RENEW}s")


async def _cron_runs(db_url: str, ws_id: str, n: int) -> bool:
    t = activity_logs
    rows = await query(
        db_url, sa.select(t.c.id).where(t.c.workspace_id == ws_id, t.c.activity_type == "cron_run")
    )
    assert len(rows) <= n, f"{len(rows)} cron_run rows, expected {n}"
    return len(rows) == n


# ---- the A2A queue ----


async def test_call_queued_through_a_is_delivered_once_by_whichever_replica_sees_the_agent_free(
    replicas: Replicas, db_url: str, agent: StubAgent
) -> None:
    a, b, c = replicas(3)
    ws_id, token = await seed(db_url, agent.url)
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=WAIT) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=WAIT) as http_b,
        httpx.AsyncClient(base_url=c.url, timeout=WAIT) as http_c,
    ):
        # B and C see the target's queue empty first (a call with a messageId looks at it). A replica
        # must not trust that look once A queued an item: not to delay the drain, and above all not to
        # send a resend through B straight to the agent while A's copy waits in the queue (it did: the
        # per-process QueueHint trusted "empty" for 5 s, and the message was delivered twice).
        for via, mid in ((http_b, "prime-b"), (http_c, "prime-c")):
            r = await via.post(f"/workspaces/{ws_id}/a2a", json=message("prime", mid), headers=ADMIN_H)
            assert r.status_code == 200, r.text

        agent.mode = "busy"
        r = await http_a.post(f"/workspaces/{ws_id}/a2a", json=message("queued on A", "q-1"), headers=ADMIN_H)
        assert r.status_code == 202, r.text
        queue_id = r.json()["queue_id"]
        agent.mode = "echo"
        queued_at = time.monotonic()
        # The caller retries through B while the item waits: answered from the queue, not sent again.
        r = await http_b.post(f"/workspaces/{ws_id}/a2a", json=message("queued on A", "q-1"), headers=ADMIN_H)
        assert r.status_code == 202, r.text
        assert r.json()["queue_id"] == queue_id

        async def delivered() -> bool:
            # the agent is free: B and C both hear it, at once, again and again
            await asyncio.gather(*(heartbeat(h, ws_id, token) for h in (http_b, http_c, http_b, http_c)))
            rows = await query(db_url, sa.select(a2a_queue).where(a2a_queue.c.workspace_id == ws_id))
            return rows[0].status == "completed"

        await poll(delivered, "the queued call to be delivered", WAIT)
        took = time.monotonic() - queued_at
        assert took <= 5.0, f"delivery took {took:.1f}s"

        # All three replicas keep hearing a free agent: nothing is sent again.
        for _ in range(3):
            await asyncio.gather(*(heartbeat(h, ws_id, token) for h in (http_a, http_b, http_c)))
        await asyncio.sleep(QUIET)
    assert agent.processed == ["prime-b", "prime-c", "q-1"]
    (item,) = await query(db_url, sa.select(a2a_queue).where(a2a_queue.c.workspace_id == ws_id))
    assert (item.status, item.attempts) == ("completed", 1)
    print(f"FIGURES queued-delivery={took:.2f}s")


# ---- provisioning ----


def agent_processes(ws_id: str) -> list[psutil.Process]:
    """The reference agents (process backend) running as workspace `ws_id`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if (
                "molecule_agent" in " ".join(proc.info["cmdline"] or ())
                and proc.environ().get("WORKSPACE_ID") == ws_id
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


async def test_workspace_created_on_a_is_provisioned_once(replicas: Replicas, db_url: str) -> None:
    a, _b, c = replicas(3, WORKSPACE_BACKEND="process")
    ws_id = ""
    try:
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=WAIT) as http_a,
            httpx.AsyncClient(base_url=c.url, timeout=WAIT) as http_c,
        ):
            r = await http_a.post("/workspaces", json={"name": "Echo", "runtime": "echo"}, headers=ADMIN_H)
            assert r.status_code == 201, r.text
            ws_id = r.json()["id"]

            async def online() -> bool:
                r = await http_c.get(f"/workspaces/{ws_id}")
                return r.json()["status"] == "online"

            await poll(online, "the workspace to come online", 60)
            (proc,) = agent_processes(ws_id)
            # The leader's health sweep (every 0.5 s, whichever replica leads) sees the agent A started
            # through the shared pidfile: no restart, no second agent.
            await asyncio.sleep(QUIET)
            assert [p.pid for p in agent_processes(ws_id)] == [proc.pid]
            assert (await http_c.get(f"/workspaces/{ws_id}")).json()["status"] == "online"
            events = await query(
                db_url,
                sa.select(structure_events.c.event_type).where(structure_events.c.workspace_id == ws_id),
            )
            kinds = Counter(e.event_type for e in events)
            assert kinds["WORKSPACE_PROVISIONING"] == 1 and kinds["WORKSPACE_OFFLINE"] == 0, kinds

            # Another replica deletes it: it stops the agent A started.
            r = await http_c.delete(f"/workspaces/{ws_id}?confirm=true", headers=ADMIN_H)
            assert r.status_code == 200, r.text
            await poll(lambda: _ready(not agent_processes(ws_id)), "the agent to stop", WAIT)
    finally:
        for p in agent_processes(ws_id) if ws_id else []:
            p.kill()


# ---- serve --workers ----


async def test_serve_workers_gives_n_replicas_on_one_port_with_the_same_guarantees(
    replicas: Replicas, db_url: str, agent: StubAgent
) -> None:
    (server,) = replicas(1, workers=3)
    workers = await poll(lambda: _ready(server.pids if len(server.pids) == 3 else None), "3 workers", WAIT)
    ws_id, token = await seed(db_url, agent.url)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        # Events: every socket, whichever worker accepted it, gets each event once, whichever worker
        # handled the request that caused it.
        sockets = [await connect(server.ws_url) for _ in range(6)]
        seen: list[list[str]] = [[] for _ in sockets]

        async def read(i: int) -> None:
            while True:
                frame = json.loads(await sockets[i].recv())
                if frame["workspace_id"] == ws_id:
                    seen[i].append(frame["payload"]["message"])

        readers = [asyncio.create_task(read(i)) for i in range(len(sockets))]
        try:
            for text in ("one", "two", "three"):
                r = await http.post(f"/workspaces/{ws_id}/notify", json={"message": text}, headers=ADMIN_H)
                assert r.status_code == 200
            await poll(
                lambda: _ready(all("three" in got for got in seen)), "the events on every socket", WAIT
            )
        finally:
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for sock in sockets:
                await sock.close()
        assert all(got == ["one", "two", "three"] for got in seen), seen

        # One worker leads; a due schedule fires once.
        leader = await poll(lambda: lease_holder_pid(db_url), "a leader", WAIT)
        assert leader in workers
        body = {"name": "yearly", "cron_expr": "0 0 1 1 *", "prompt": "tick"}
        r = await http.post(f"/workspaces/{ws_id}/schedules", json=body, headers=auth)
        assert r.status_code == 201, r.text
        schedule = sa.update(workspace_schedules).where(workspace_schedules.c.id == r.json()["id"])

        def fires() -> int:
            return sum(1 for m in agent.processed if m.startswith("cron-"))

        await execute(db_url, schedule.values(next_run_at=utcnow()))
        await poll(lambda: _ready(fires() == 1), "the schedule to fire", WAIT)

        # A queued call is delivered once while heartbeats land on every worker at once.
        agent.mode = "busy"
        r = await http.post(f"/workspaces/{ws_id}/a2a", json=message("queued", "w-1"), headers=ADMIN_H)
        assert r.status_code == 202, r.text
        agent.mode = "echo"

        async def delivered() -> bool:
            async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as fresh:  # new connections
                await asyncio.gather(*(heartbeat(fresh, ws_id, token) for _ in range(6)))
            rows = await query(db_url, sa.select(a2a_queue.c.status).where(a2a_queue.c.workspace_id == ws_id))
            return rows[0].status == "completed"

        await poll(delivered, "the queued call to be delivered", WAIT)

        # kill -9 the leading worker: another takes the lease, the parent starts a new worker, and a slot
        # due meanwhile fires once.
        os.kill(leader, signal.SIGKILL)
        killed_at = time.monotonic()
        await execute(db_url, schedule.values(next_run_at=utcnow()))

        async def successor() -> int | None:
            pid = await lease_holder_pid(db_url)
            return pid if pid is not None and pid != leader and pid in server.pids else None

        await poll(successor, "another worker to take the lease", WAIT)
        took = time.monotonic() - killed_at
        assert took <= TAKEOVER_BOUND, f"takeover took {took:.1f}s (TTL {LEASE_TTL}s)"
        await poll(lambda: _ready(fires() == 2), "the schedule to fire after the failover", WAIT)
        await poll(
            lambda: _ready(len(server.pids) == 3 and leader not in server.pids), "a replacement worker", WAIT
        )
        for _ in range(3):
            await asyncio.gather(*(heartbeat(http, ws_id, token) for _ in range(3)))
        await asyncio.sleep(QUIET)
    assert fires() == 2
    assert agent.processed.count("w-1") == 1
    await poll(lambda: _cron_runs(db_url, ws_id, 2), "two cron_run rows", WAIT)
    # The supervisor killed with -9: its workers notice and stop (none keeps the port or the lease).
    orphans = server.pids
    server.kill()
    await poll(lambda: _ready(not any(_alive(pid) for pid in orphans)), "the workers to stop", WAIT)
    print(f"FIGURES workers-takeover={took:.2f}s ttl={LEASE_TTL}s")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.parametrize(
    ("database", "redis", "why"),
    [
        ("sqlite:///{tmp}/ws.db", "redis://127.0.0.1:6379/0", "DATABASE_URL on Postgres"),
        ("postgresql://postgres@127.0.0.1:5432/postgres", "", "REDIS_URL"),
    ],
)
def test_serve_workers_refuses_state_the_workers_cannot_share(
    tmp_path: Path, database: str, redis: str, why: str
) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "DATABASE_URL": database.format(tmp=tmp_path), "REDIS_URL": redis}
    argv = [sys.executable, "-m", "workspace_server", "serve", "--workers", "2", "--port", str(free_port())]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"--workers needs {why}" in done.stderr.decode()
    assert not (tmp_path / "ws.db").exists()  # refused before migrating anything
