"""registry/batch.py without a database: how heartbeats are grouped, ordered and failed.

The statement itself runs against Postgres in tests/integration/test_registry_heartbeat_batch.py; here
`_execute` is replaced by a recorder so grouping and failure handling can be observed exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from workspace_server.registry.batch import BatchFailed, Beat, BeatResult, HeartbeatBatcher

WS = ["00000000-0000-4000-8000-00000000000" + str(i) for i in range(4)]


def beat(ws_id: str, uptime: int = 1) -> Beat:
    return Beat(ws_id, None, 0.0, "", 0, uptime, "", 0)


class Recorder(HeartbeatBatcher):
    """Records each batch; holds it until `release` is set."""

    def __init__(self) -> None:
        super().__init__(engine=None)  # type: ignore[arg-type]
        self.batches: list[list[tuple[str, int]]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def _execute(self, beats: Sequence[Beat]) -> list[BeatResult]:
        self.batches.append([(b.workspace_id, b.uptime_seconds) for b in beats])
        await self.release.wait()
        return [BeatResult(denied=False, snapshot=None, queue_pending=False, at="") for _ in beats]


async def test_concurrent_heartbeats_share_one_batch() -> None:
    batcher = Recorder()
    await asyncio.gather(*(batcher.submit(beat(ws)) for ws in WS))
    assert batcher.batches == [[(ws, 1) for ws in WS]]


async def test_a_workspace_twice_goes_in_two_batches_in_arrival_order() -> None:
    batcher = Recorder()
    await asyncio.gather(
        batcher.submit(beat(WS[0], 1)), batcher.submit(beat(WS[1])), batcher.submit(beat(WS[0], 2))
    )
    assert batcher.batches == [[(WS[0], 1), (WS[1], 1)], [(WS[0], 2)]]


async def test_heartbeats_arriving_during_a_batch_gather_for_the_next() -> None:
    batcher = Recorder()
    batcher.release.clear()
    first = asyncio.ensure_future(batcher.submit(beat(WS[0])))
    await asyncio.sleep(0)  # the runner starts and holds the first batch
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.submit(beat(ws))) for ws in WS[1:]]
    await asyncio.sleep(0)
    batcher.release.set()
    await asyncio.gather(first, *later)
    assert batcher.batches == [[(WS[0], 1)], [(ws, 1) for ws in WS[1:]]]


async def test_close_fails_in_flight_and_waiting_heartbeats() -> None:
    """At shutdown nobody is left waiting: each gets BatchFailed (the route then retries per step)."""
    batcher = Recorder()
    batcher.release.clear()
    in_flight = asyncio.ensure_future(batcher.submit(beat(WS[0])))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(batcher.submit(beat(WS[1])))
    await asyncio.sleep(0)
    await batcher.close()
    for fut in (in_flight, waiting):
        with pytest.raises(BatchFailed):
            await asyncio.wait_for(fut, 5)  # deadlock guard, not a timing assertion


async def test_a_failed_statement_fails_its_batch_only() -> None:
    class Failing(Recorder):
        async def _execute(self, beats: Sequence[Beat]) -> list[BeatResult]:
            if len(self.batches) == 0:
                self.batches.append([(b.workspace_id, b.uptime_seconds) for b in beats])
                raise RuntimeError("deadlock detected")
            return await super()._execute(beats)

    batcher = Failing()
    results: list[Any] = await asyncio.gather(
        batcher.submit(beat(WS[0], 1)), batcher.submit(beat(WS[0], 2)), return_exceptions=True
    )
    assert isinstance(results[0], BatchFailed) and "deadlock" in str(results[0])
    assert isinstance(results[1], BeatResult)
