"""The app's one owner of background tasks (common/tasks.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from workspace_server.common.tasks import SupervisorClosed, TaskSupervisor


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_spawn_names_the_task_and_keeps_it_until_it_ends() -> None:
    tasks = TaskSupervisor()
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    task = tasks.spawn("work:1", work(), group="g")
    assert task.get_name() == "work:1"
    assert tasks.tasks() == [task] and tasks.tasks("g") == [task] and tasks.tasks("other") == []
    release.set()
    assert await task == 7
    assert tasks.tasks() == []


async def test_a_crash_is_logged_once_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSupervisor()

    async def boom() -> None:
        raise RuntimeError("kaput")

    task = tasks.spawn("boom:42", boom())
    with caplog.at_level(logging.ERROR, logger="workspace_server.common.tasks"):
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    crashes = [r for r in caplog.records if "boom:42" in r.getMessage()]
    assert len(crashes) == 1
    assert crashes[0].exc_info is not None and "kaput" in str(crashes[0].exc_info[1])
    assert tasks.tasks() == []


async def test_an_awaited_task_leaves_its_error_to_the_awaiting_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSupervisor()

    async def boom() -> None:
        raise ValueError("for the caller")

    with caplog.at_level(logging.ERROR, logger="workspace_server.common.tasks"):
        with pytest.raises(ValueError, match="for the caller"):
            await tasks.spawn("req", boom(), awaited=True)
        await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "workspace_server.common.tasks"]


async def test_cancellation_is_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSupervisor()
    task = tasks.spawn("stopped", _forever(), group="g")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="workspace_server.common.tasks"):
        await tasks.cancel("g")
        await asyncio.sleep(0)
    assert task.cancelled()
    assert not caplog.records


async def test_shutdown_drains_work_that_ends_within_the_deadline() -> None:
    tasks = TaskSupervisor()
    done: list[str] = []

    async def short(name: str) -> None:
        await asyncio.sleep(0.05)
        done.append(name)
        if name == "first":  # work started while draining is drained too
            tasks.spawn("follow-up", short("follow-up"))

    tasks.spawn("first", short("first"))
    tasks.spawn("second", short("second"))
    started = time.monotonic()
    await tasks.shutdown(deadline=5.0)
    assert sorted(done) == ["first", "follow-up", "second"]
    assert time.monotonic() - started < 2.0  # did not wait for the deadline once all had ended
    assert tasks.tasks() == []


async def test_shutdown_cancels_what_is_still_running_at_the_deadline() -> None:
    tasks = TaskSupervisor()
    quick_done = asyncio.Event()

    async def quick() -> None:
        quick_done.set()

    slow = tasks.spawn("slow", _forever())
    tasks.spawn("quick", quick())
    started = time.monotonic()
    await tasks.shutdown(deadline=0.2)
    elapsed = time.monotonic() - started
    assert quick_done.is_set()
    assert slow.cancelled()
    assert 0.15 <= elapsed < 2.0
    assert tasks.tasks() == []


async def test_shutdown_leaves_daemons_to_their_owner() -> None:
    tasks = TaskSupervisor()
    daemon = tasks.spawn("reader", _forever(), daemon=True)
    started = time.monotonic()
    await tasks.shutdown(deadline=5.0)
    assert time.monotonic() - started < 2.0  # not waited for
    assert not daemon.done()  # nor cancelled: its owner's close() stops it
    daemon.cancel()
    await asyncio.gather(daemon, return_exceptions=True)


async def test_no_spawn_after_shutdown() -> None:
    tasks = TaskSupervisor()
    await tasks.shutdown(deadline=1.0)
    assert tasks.closed
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    coro = work()
    with pytest.raises(SupervisorClosed):
        tasks.spawn("late", coro)
    await asyncio.sleep(0)
    assert ran == []
    assert coro.cr_frame is None  # closed, not left to warn "never awaited"


async def test_wait_returns_when_the_group_has_ended_whatever_the_outcome() -> None:
    tasks = TaskSupervisor()

    async def fails() -> None:
        raise RuntimeError("x")

    async def works() -> None:
        await asyncio.sleep(0.01)

    tasks.spawn("a", fails(), group="g")
    tasks.spawn("b", works(), group="g")
    other = tasks.spawn("c", _forever(), group="h")
    await asyncio.wait_for(tasks.wait("g"), timeout=5)
    assert tasks.tasks("g") == []
    assert not other.done()
    await tasks.cancel("h")
