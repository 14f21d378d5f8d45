"""Leader lease: one holder at a time; a peer takes over once the lease expires or is released."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.common.time import utcnow
from workspace_server.db.engine import make_engine
from workspace_server.db.migrate import upgrade_to_head
from workspace_server.db.schema import leader_leases
from workspace_server.loops.leader import Lease, new_holder_id


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    await upgrade_to_head(eng)
    yield eng
    await eng.dispose()


async def lease_rows(engine: AsyncEngine) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(leader_leases.c.name, leader_leases.c.holder))).all()
    return [(r.name, r.holder) for r in rows]


async def test_only_one_contender_holds_and_the_other_takes_over_after_expiry(engine: AsyncEngine) -> None:
    clock = Clock()
    a = Lease(engine, "sweepers", "host-a:1:aa", ttl=15, clock=clock)
    b = Lease(engine, "sweepers", "host-b:2:bb", ttl=15, clock=clock)

    assert await a.renew() is True
    assert await b.renew() is False
    assert a.held and not b.held
    assert await lease_rows(engine) == [("sweepers", "host-a:1:aa")]

    clock.advance(10)  # a renews in time: still a's
    assert await a.renew() is True
    clock.advance(10)
    assert await b.renew() is False

    clock.advance(16)  # a stopped renewing: its lease ran out
    assert not a.held
    assert await b.renew() is True
    assert b.held
    assert await a.renew() is False  # the old leader does not grab it back
    assert not a.held
    assert await lease_rows(engine) == [("sweepers", "host-b:2:bb")]


async def test_release_hands_over_without_waiting_for_the_ttl(engine: AsyncEngine) -> None:
    clock = Clock()
    a = Lease(engine, "sweepers", "a", ttl=15, clock=clock)
    b = Lease(engine, "sweepers", "b", ttl=15, clock=clock)
    assert await a.renew()
    await a.release()
    assert not a.held
    clock.advance(0.001)
    assert await b.renew() is True


async def test_release_by_a_non_holder_changes_nothing(engine: AsyncEngine) -> None:
    clock = Clock()
    a = Lease(engine, "sweepers", "a", ttl=15, clock=clock)
    b = Lease(engine, "sweepers", "b", ttl=15, clock=clock)
    assert await a.renew()
    await b.release()
    clock.advance(1)
    assert await b.renew() is False
    assert await a.renew() is True


async def test_leases_by_different_names_are_independent(engine: AsyncEngine) -> None:
    a = Lease(engine, "sweepers", "a")
    b = Lease(engine, "scheduler", "b")
    assert await a.renew() and await b.renew()
    assert sorted(await lease_rows(engine)) == [("scheduler", "b"), ("sweepers", "a")]


def test_holder_id_is_host_pid_random_and_fits_the_column() -> None:
    one, two = new_holder_id(), new_holder_id()
    assert one != two
    host, pid, rand = one.rsplit(":", 2)
    assert pid.isdigit() and len(rand) == 8 and host
    assert len(one) <= 64


async def test_racing_contenders_on_a_missing_row_elect_exactly_one(engine: AsyncEngine) -> None:
    contenders = [Lease(engine, "sweepers", f"c{i}") for i in range(6)]
    won = await asyncio.gather(*(c.renew() for c in contenders))
    assert won.count(True) == 1
    winner = contenders[won.index(True)]
    assert await lease_rows(engine) == [("sweepers", winner.holder)]
