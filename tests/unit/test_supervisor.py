"""The loop supervisor: restart with back-off on crash, no restart on clean return, stop on cancel."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from workspace_server.common.tasks import TaskSupervisor
from workspace_server.loops.supervisor import Loops, periodic, supervise


class Recorder:
    """A fake sleep: records the back-off it was asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def failing(times: int) -> tuple[list[int], Any]:
    calls: list[int] = []

    async def fn() -> None:
        calls.append(1)
        if len(calls) <= times:
            raise RuntimeError("boom")

    return calls, fn


async def test_crashing_loop_restarts_with_doubling_backoff_capped_at_30s() -> None:
    calls, fn = failing(7)
    sleep = Recorder()
    await supervise("t", fn, sleep=sleep)
    assert len(calls) == 8  # seven crashes, then a clean run
    assert sleep.delays == [1, 2, 4, 8, 16, 30, 30]


async def test_clean_return_is_not_restarted() -> None:
    calls, fn = failing(0)
    sleep = Recorder()
    await supervise("t", fn, sleep=sleep)
    assert calls == [1]
    assert sleep.delays == []


async def test_a_long_healthy_run_resets_the_backoff() -> None:
    now = [0.0]
    runs: list[int] = []
    sleep = Recorder()

    async def fn() -> None:
        runs.append(1)
        if len(runs) == 3:
            now[0] += 3600  # this run stayed up for an hour before crashing
        if len(runs) <= 4:
            raise RuntimeError("boom")

    await supervise("t", fn, sleep=sleep, clock=lambda: now[0])
    assert sleep.delays == [1, 2, 1, 2]


async def test_cancel_stops_a_running_loop_without_restart() -> None:
    started = asyncio.Event()
    calls: list[int] = []

    async def fn() -> None:
        calls.append(1)
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("t", fn))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]


async def test_cancel_during_backoff_stops() -> None:
    sleeping = asyncio.Event()

    async def sleep(_: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    calls, fn = failing(100)
    task = asyncio.create_task(supervise("t", fn, sleep=sleep))
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]


async def test_loops_stop_cancels_every_task() -> None:
    ctx: Any = SimpleNamespace(tasks=TaskSupervisor(), loop_ticks={})
    loops = Loops(ctx)
    started = [asyncio.Event(), asyncio.Event()]

    def forever(ev: asyncio.Event) -> Any:
        async def fn() -> None:
            ev.set()
            await asyncio.Event().wait()

        return fn

    loops.spawn("a", forever(started[0]))
    loops.spawn("b", forever(started[1]))
    await asyncio.gather(*(e.wait() for e in started))
    await loops.stop()
    assert all(t.cancelled() for t in loops.tasks.values())


async def test_loops_restart_a_crashed_task() -> None:
    """Through the real spawn path: a loop that crashes once runs again (1 s back-off)."""
    ctx: Any = SimpleNamespace(tasks=TaskSupervisor(), loop_ticks={})
    loops = Loops(ctx)
    second_run = asyncio.Event()
    calls: list[int] = []

    async def fn() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first run crashes")
        second_run.set()
        await asyncio.Event().wait()

    loops.spawn("crashy", fn)
    await asyncio.wait_for(second_run.wait(), timeout=10)
    await loops.stop()
    assert len(calls) == 2


class FakeLease:
    def __init__(self, held: bool) -> None:
        self.held = held


async def test_periodic_ticks_and_runs_only_while_the_lease_is_held() -> None:
    ctx: Any = SimpleNamespace(tasks=TaskSupervisor(), loop_ticks={})
    lease = FakeLease(held=False)
    runs: list[int] = []
    ran = asyncio.Event()

    async def body() -> None:
        runs.append(1)
        ran.set()

    task = asyncio.create_task(periodic(ctx, "p", 0, body, lease=lease))  # type: ignore[arg-type]
    while "p" not in ctx.loop_ticks:
        await asyncio.sleep(0)
    assert runs == []  # ticking, but not leading: no sweep
    lease.held = True
    await asyncio.wait_for(ran.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs
