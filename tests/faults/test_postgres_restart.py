"""Postgres crashed and started again under heartbeat, register, A2A and create load (issue 11 §5).

The server runs on a Postgres cluster of this test's own, which is stopped with `pg_ctl -m immediate`
(a crash: the next start recovers from the WAL) while agents heartbeat, re-register and call each other
and an operator creates workspaces. During the outage every request is answered within a few seconds,
with a 503 `{"error": …}` where it needs the database (never a 500, never a hang); once Postgres is back
the same server process serves again, and nothing it acknowledged before the crash is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import sqlalchemy as sa

from tests.faults.conftest import ServerFactory
from tests.faults.services import PgCluster
from tests.integration.a2a_support import StubAgent, message
from workspace_server.db.engine import make_engine

pytestmark = pytest.mark.integration

ANSWER_DEADLINE = 5.0  # every request is answered within this (httpx's timeout: a hang fails the test)
BEFORE_SECONDS = 1.5
OUTAGE_SECONDS = 3.0
RECOVERY_DEADLINE = 15.0  # Postgres accepting connections again → every kind of request succeeds again
AGENTS = 3
PAUSE = 0.05  # between two requests of one worker


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


@dataclass
class Record:
    phase: str
    kind: str
    status: int  # -1: no answer within ANSWER_DEADLINE
    seconds: float
    body: str


@dataclass
class Load:
    http: httpx.AsyncClient
    phase: str = "before"
    stop: bool = False
    records: list[Record] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # ids of creates answered 201
    uptime: dict[str, int] = field(default_factory=dict)  # last acknowledged uptime_seconds per workspace

    async def call(self, kind: str, method: str, url: str, **kw: object) -> httpx.Response | None:
        phase, start = self.phase, time.monotonic()
        try:
            r = await self.http.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            self.records.append(Record(phase, kind, -1, time.monotonic() - start, ""))
            return None
        self.records.append(Record(phase, kind, r.status_code, time.monotonic() - start, r.text[:200]))
        return r

    def last_ok(self, kind: str) -> float | None:
        oks = [i for i, r in enumerate(self.records) if r.kind == kind and r.status < 300]
        return oks[-1] if oks else None


async def agent_worker(load: Load, wid: str, token: str, url: str, *, sentinel: bool = False) -> None:
    """Heartbeats (uptime_seconds counts up), a register every few beats, and an A2A call to itself.
    A `sentinel` only heartbeats before the outage: its last acknowledged write is known."""
    auth = {"Authorization": f"Bearer {token}"}
    n = 0
    while not load.stop:
        n += 1
        if not sentinel or load.phase == "before":
            hb = {"workspace_id": wid, "uptime_seconds": n}
            r = await load.call("heartbeat", "POST", "/registry/heartbeat", json=hb, headers=auth)
            if r is not None and r.status_code == 200:
                load.uptime[wid] = n
        if not sentinel:
            if n % 4 == 0:
                reg = {"id": wid, "url": url, "agent_card": {"name": wid}}
                await load.call("register", "POST", "/registry/register", json=reg, headers=auth)
            await load.call("a2a", "POST", f"/workspaces/{wid}/a2a", json=message(f"beat {n}"))
        await asyncio.sleep(PAUSE)


async def operator_worker(load: Load) -> None:
    n = 0
    while not load.stop:
        n += 1
        body = {"name": f"created {n}", "runtime": "external"}
        r = await load.call("create", "POST", "/workspaces", json=body)
        if r is not None and r.status_code == 201:
            load.created.append(r.json()["id"])
        await load.call("list", "GET", "/workspaces")
        await asyncio.sleep(PAUSE)


async def test_postgres_restarted_under_load(
    server_factory: ServerFactory, pg_cluster: PgCluster, agent: StubAgent
) -> None:
    srv = server_factory(DATABASE_URL=pg_cluster.url)
    pid = srv.pid
    http = httpx.AsyncClient(base_url=srv.url, timeout=ANSWER_DEADLINE)
    url = agent.url.replace("127.0.0.1", "localhost")  # loopback by name: allowed outside production
    load = Load(http)
    try:
        agents: list[tuple[str, str]] = []
        for i in range(AGENTS + 1):
            r = await http.post("/workspaces", json={"name": f"agent {i}", "runtime": "external"})
            assert r.status_code == 201, r.text
            wid, token = r.json()["id"], r.json()["connection"]["auth_token"]
            reg = {"id": wid, "url": url, "agent_card": {"name": f"agent {i}"}}
            r = await http.post("/registry/register", json=reg, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            agents.append((wid, token))
        sentinel = agents[0][0]

        workers = [asyncio.create_task(agent_worker(load, w, t, url)) for w, t in agents[1:]]
        workers.append(asyncio.create_task(agent_worker(load, sentinel, agents[0][1], url, sentinel=True)))
        workers.append(asyncio.create_task(operator_worker(load)))
        await asyncio.sleep(BEFORE_SECONDS)

        load.phase = "down"
        created_before = list(load.created)
        await asyncio.to_thread(pg_cluster.stop, "immediate")
        down_at = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)
        load.phase = "up"
        await asyncio.to_thread(pg_cluster.start)
        up_at = time.monotonic()
        outage = up_at - down_at
        first_up = len(load.records)

        kinds = ("heartbeat", "register", "create", "list")
        recovered: dict[str, float] = {}
        while len(recovered) < len(kinds) and time.monotonic() - up_at < RECOVERY_DEADLINE:
            for rec in load.records[first_up:]:
                if rec.status < 300 and rec.kind in kinds and rec.kind not in recovered:
                    recovered[rec.kind] = time.monotonic() - up_at
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        load.stop = True
        await asyncio.gather(*workers)

        # the same process all along, and it answered everything, in time, with 2xx or a clean 503
        assert srv.alive() and srv.pid == pid and srv.starts == 1
        hung = [r for r in load.records if r.status == -1 or r.seconds > ANSWER_DEADLINE]
        assert not hung, f"requests without an answer in {ANSWER_DEADLINE}s: {hung[:5]}"
        bad = [r for r in load.records if r.status not in (200, 201, 503)]
        assert not bad, f"answers other than 2xx/503: {bad[:5]}"
        down = [r for r in load.records if r.phase == "down"]
        for kind in ("heartbeat", "register", "create", "list"):
            assert any(r.kind == kind and r.status == 503 for r in down), (
                f"no 503 for {kind} during the outage"
            )
        assert all('"error"' in r.body for r in load.records if r.status == 503)
        assert set(recovered) == set(kinds), f"not recovered within {RECOVERY_DEADLINE}s: {recovered}"

        # nothing acknowledged before the crash is lost: the creates, and the sentinel's last heartbeat
        engine = make_engine(pg_cluster.url)
        try:
            async with engine.connect() as conn:
                ids = set((await conn.execute(sa.text("SELECT id FROM workspaces"))).scalars())
                uptime = (
                    await conn.execute(
                        sa.text("SELECT uptime_seconds FROM workspaces WHERE id = :id"), {"id": sentinel}
                    )
                ).scalar_one()
        finally:
            await engine.dispose()
        missing = [w for w in load.created if w not in ids]
        assert not missing, f"acknowledged creates lost: {missing}"
        assert created_before and set(created_before) <= ids
        assert uptime == load.uptime[sentinel], "the sentinel's last acknowledged heartbeat was lost"

        during = [r for r in down if r.status == 503]
        a2a_down = [r for r in down if r.kind == "a2a"]
        print(
            f"\nFIGURES postgres: outage {outage:.1f}s (pg_ctl -m immediate → start), {len(load.records)}"
            f" requests, {len(down)} during the outage: {len(during)} × 503, slowest answer then"
            f" {max(r.seconds for r in down) * 1000:.0f} ms; A2A during it: {len(a2a_down)} calls,"
            f" {sum(r.status == 200 for r in a2a_down)} × 200 (URL cached); recovered after Postgres"
            f" came back (s): {', '.join(f'{k} {v:.2f}' for k, v in sorted(recovered.items()))};"
            f" {len(load.created)} acknowledged creates, 0 lost"
        )
    finally:
        load.stop = True
        await http.aclose()
