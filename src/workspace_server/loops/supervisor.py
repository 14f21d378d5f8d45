"""Supervised background loops (spec 06 §2.5, DESIGN §6).

Each loop is an asyncio task. An exception restarts it after a back-off of 1 s doubling to 30 s; a clean
return ends it; cancellation stops it. A failure streak resets once a run has stayed up for a while, so a
loop that crashes once a day is not punished with the 30 s ceiling forever.
Sweepers run only while this process holds the `sweepers` lease, so N replicas sweep once, not N times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.loops.leader import Lease, new_holder_id
from workspace_server.loops.liveness import cancel_restarts, sweep_liveness

log = logging.getLogger(__name__)

LoopFn = Callable[[], Awaitable[None]]
Body = Callable[[], Awaitable[object]]  # one sweep pass; its result (ids touched, rows deleted) is ignored
SleepFn = Callable[[float], Awaitable[None]]

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # a run that lasted this long starts a fresh failure streak
SWEEPER_LEASE = "sweepers"
LOOPS_GROUP = "loops"  # the task supervisor group of the loop tasks


class _StreakBackoff:
    """tenacity's wait_exponential, counted over the current failure streak rather than all attempts."""

    def __init__(self) -> None:
        self._exp = wait_exponential(multiplier=BACKOFF_FIRST, min=BACKOFF_FIRST, max=BACKOFF_MAX)
        self.streak_start = 0  # attempt number before the current streak began

    def __call__(self, state: RetryCallState) -> float:
        streak = SimpleNamespace(attempt_number=state.attempt_number - self.streak_start)
        return float(self._exp(streak))  # type: ignore[arg-type]


async def supervise(
    name: str,
    fn: LoopFn,
    *,
    sleep: SleepFn = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run `fn` until it returns; restart it with back-off when it raises an Exception."""
    backoff = _StreakBackoff()

    def _log_crash(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.upcoming_sleep
        log.error("loop %s crashed; restarting in %.0fs", name, delay, exc_info=exc)

    retrying = AsyncRetrying(
        sleep=sleep,
        wait=backoff,
        retry=retry_if_exception_type(Exception),  # CancelledError is not an Exception: it stops
        before_sleep=_log_crash,
    )
    async for attempt in retrying:
        started = clock()
        with attempt:
            try:
                await fn()
            finally:
                if clock() - started >= HEALTHY_AFTER:
                    backoff.streak_start = attempt.retry_state.attempt_number - 1


def record_tick(ctx: AppContext, name: str) -> None:
    """Feed `/admin/liveness`: when each loop last completed an iteration."""
    ctx.loop_ticks[name] = utcnow()


async def periodic(
    ctx: AppContext,
    name: str,
    interval: float,
    body: Body,
    *,
    lease: Lease | None = None,
    first_delay: float = 0.0,
) -> None:
    """Call `body` every `interval` seconds (only while `lease` is held, when one is given)."""
    if first_delay > 0:
        await asyncio.sleep(first_delay)
    while True:
        if lease is None or lease.held:
            await body()
        record_tick(ctx, name)
        await asyncio.sleep(interval)


class Loops:
    """The running loop tasks, started on the app's task supervisor (group `loops`); `stop()` cancels
    them and the restarts they started, and gives up the lease so a peer takes over at once."""

    def __init__(self, ctx: AppContext, lease: Lease | None = None) -> None:
        self.ctx = ctx
        self.lease = lease
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, fn: LoopFn) -> None:
        self.tasks[name] = self.ctx.tasks.spawn(f"loop:{name}", supervise(name, fn), group=LOOPS_GROUP)

    async def stop(self) -> None:
        await self.ctx.tasks.cancel(LOOPS_GROUP)
        await cancel_restarts(self.ctx)
        from workspace_server.loops.health import cancel_health_restarts

        await cancel_health_restarts(self.ctx)
        if self.lease is not None:
            try:
                await self.lease.release()
            except Exception:
                log.warning("could not release lease %s", self.lease.name, exc_info=True)


def start_loops(ctx: AppContext) -> Loops:
    # imported here: they pull in other domains' services, which the supervisor core does not need
    from workspace_server.loops.activity_prune import prune_once
    from workspace_server.loops.provision_timeout import sweep_provision_timeouts

    s = ctx.settings
    lease = Lease(ctx.engine, SWEEPER_LEASE, new_holder_id(), ttl=s.LEADER_LEASE_TTL_SECONDS)
    loops = Loops(ctx, lease)
    ctx.loops = loops  # for operators' tooling and tests: which loops run, whether we lead

    async def keep_lease() -> None:
        try:
            while True:
                await lease.renew()
                record_tick(ctx, "leader-lease")
                await asyncio.sleep(s.LEADER_LEASE_RENEW_SECONDS)
        finally:
            lease.forget()  # a crashed renewer must not leave sweepers believing they still lead

    every_prune = s.activity_cleanup_interval_seconds
    # (name, interval, one pass, delay before the first pass: the pruner waits one interval, as upstream)
    sweepers: list[tuple[str, float, Body, float]] = [
        ("liveness-sweep", s.LIVENESS_SWEEP_INTERVAL, lambda: sweep_liveness(ctx), 0.0),
        ("provision-timeout-sweep", s.PROVISION_SWEEP_INTERVAL, lambda: sweep_provision_timeouts(ctx), 0.0),
        ("activity-pruner", every_prune, lambda: prune_once(ctx), every_prune),
    ]
    if s.SCHEDULER_INTERVAL > 0:
        from workspace_server.schedules.scheduler import PHANTOM_SWEEP_SECONDS, Scheduler, sweep_phantom_busy

        scheduler = Scheduler(ctx)
        ctx.scheduler = scheduler
        sweepers.append(("scheduler", s.SCHEDULER_INTERVAL, scheduler.tick, 0.0))
        sweepers.append(("phantom-busy-sweep", PHANTOM_SWEEP_SECONDS, lambda: sweep_phantom_busy(ctx), 0.0))
    if ctx.orchestrator is not None and ctx.orchestrator.backend is not None:
        from workspace_server.loops.health import sweep_health
        from workspace_server.loops.hibernation import sweep_idle_hibernation
        from workspace_server.loops.orphans import sweep_orphans

        sweepers.append(("health-sweep", s.HEALTH_SWEEP_INTERVAL, lambda: sweep_health(ctx), 0.0))
        if s.ORPHAN_SWEEP_INTERVAL > 0:
            sweepers.append(("orphan-sweep", s.ORPHAN_SWEEP_INTERVAL, lambda: sweep_orphans(ctx), 0.0))
        if s.HIBERNATION_SWEEP_INTERVAL > 0:
            every = s.HIBERNATION_SWEEP_INTERVAL
            sweepers.append(("hibernation-sweep", every, lambda: sweep_idle_hibernation(ctx), every))
    loops.spawn("leader-lease", keep_lease)
    from workspace_server.channels.manager import manager_loop

    loops.spawn("channel-manager", lambda: manager_loop(ctx, lease))  # Telegram pollers, leader only
    for name, interval, body, first_delay in sweepers:
        loops.spawn(name, _bind_periodic(ctx, name, interval, body, lease, first_delay))
    return loops


def _bind_periodic(
    ctx: AppContext, name: str, interval: float, body: Body, lease: Lease, first_delay: float
) -> LoopFn:
    return lambda: periodic(ctx, name, interval, body, lease=lease, first_delay=first_delay)
