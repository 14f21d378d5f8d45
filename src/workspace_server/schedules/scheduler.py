"""The scheduler (spec 05 §6): fires due schedules through the A2A proxy, as the canvas would.

Every `SCHEDULER_INTERVAL` seconds, on the leader only (loops/supervisor.py), one tick:
- takes up to 50 enabled schedules whose `next_run_at` has come, soonest first, and runs at most 10 at
  once; the tick waits for all of them;
- *claims* each one by moving `next_run_at` to the next slot after now, compare-and-set on the value it
  read, before anything is sent. So two replicas never fire the same slot, a crash mid-fire loses that
  one run instead of re-firing it on every tick (#1029), and missed slots are never replayed;
- a workspace whose runtime schedules natively (capability `scheduler`) is only advanced;
- a busy workspace (active_tasks >= max_concurrent_tasks) is re-checked every 10 s for 2 minutes, then
  the run is recorded as `skipped` (#115, #969); a failed lookup fails open;
- the prompt goes as `message/send` with an empty caller (no hierarchy check; budget enforced; a queued
  202 counts as delivered), 5 minutes at most;
- the outcome is written to the row, to a `cron_run` activity row and as `CRON_EXECUTED`/`CRON_SKIPPED`.
  Three empty replies in a row mark the schedule `stale` (#795).

The first tick also repairs enabled rows without a `next_run_at` (#722). A separate sweep every 5
minutes zeroes the task count of workspaces that claim to be busy but logged nothing for 10 minutes
(a crashed runtime would otherwise have every cron skipped forever).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from workspace_server.a2a.delegation import reply_error
from workspace_server.a2a.proxy import Outcome, ProxyResult, proxy_a2a
from workspace_server.activity.service import truncate_bytes
from workspace_server.activity.store import insert_activity
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.registry.service import has_capability
from workspace_server.schedules import cron, store

log = logging.getLogger(__name__)

TICK_LIMIT = 50
MAX_PARALLEL = 10
DB_DEADLINE = 10.0  # seconds for any one database step (#2026: a hung query wedged the tick)
FIRE_TIMEOUT_SECONDS = 300
BUSY_RECHECK_SECONDS = 10.0
BUSY_WAIT_SECONDS = 120.0
STALE_AFTER_EMPTY = 3
PROMPT_LOG_BYTES = 200
PHANTOM_QUIET = timedelta(minutes=10)
PHANTOM_SWEEP_SECONDS = 300.0
_EMPTY_MARKERS = ("(no response generated)", '"text":""', '"text": ""')


@dataclass
class Scheduler:
    """One per process; the knobs are the spec's timings, shortened by tests."""

    ctx: AppContext
    busy_wait: float = BUSY_WAIT_SECONDS
    busy_recheck: float = BUSY_RECHECK_SECONDS
    repaired: bool = False

    async def tick(self) -> list[str]:
        """One pass; returns the ids of the schedules it claimed."""
        if not self.repaired:
            await repair_next_runs(self.ctx)
            self.repaired = True
        async with asyncio.timeout(DB_DEADLINE):
            async with self.ctx.engine.connect() as conn:
                rows = await store.due(conn, utcnow(), TICK_LIMIT)
        gate = asyncio.Semaphore(MAX_PARALLEL)
        claimed = await asyncio.gather(*(self._guarded(row, gate) for row in rows))
        return [row.id for row, won in zip(rows, claimed, strict=True) if won]

    async def _guarded(self, row: Any, gate: asyncio.Semaphore) -> bool:
        async with gate:
            try:
                return await self._run(row)
            except Exception:  # one bad schedule must not stop the others; its slot was advanced
                log.exception("schedule %s (%s) failed", row.id, row.name)
                return False

    async def _run(self, row: Any) -> bool:
        if not await _claim(self.ctx, row):
            return False
        if has_capability(self.ctx, row.workspace_id, "scheduler"):
            return True  # the runtime fires its own crons; we only keep the slot moving
        active = await self._wait_for_capacity(row.workspace_id)
        if active is not None:
            await _record_skip(self.ctx, row, active)
            return True
        await _fire(self.ctx, row)
        return True

    async def _wait_for_capacity(self, ws_id: str) -> int | None:
        """None once the workspace has a free task slot; its active task count if it stays busy."""
        deadline = time.monotonic() + self.busy_wait
        while True:
            active = await _busy_count(self.ctx, ws_id)
            if active is None or time.monotonic() >= deadline:
                return active
            await asyncio.sleep(self.busy_recheck)


async def repair_next_runs(ctx: AppContext) -> int:
    """Give enabled rows without a next fire time one (hibernated workspaces included)."""
    async with asyncio.timeout(DB_DEADLINE):
        async with ctx.engine.begin() as conn:
            rows = await store.missing_next_run(conn)
            now = utcnow()
            for row in rows:
                try:
                    await store.set_next_run(conn, row.id, cron.next_fire(row.cron_expr, row.timezone, now))
                except ValueError:  # CronError too: a rule written around the API
                    log.warning("schedule %s: unreadable rule %r, no fire time", row.id, row.cron_expr)
    return len(rows)


async def _claim(ctx: AppContext, row: Any) -> bool:
    try:
        upcoming: datetime | None = cron.next_fire(row.cron_expr, row.timezone, utcnow())
    except ValueError:
        upcoming = None  # never due again until the rule is fixed (PATCH recomputes)
    async with asyncio.timeout(DB_DEADLINE):
        async with ctx.engine.begin() as conn:
            won = await store.claim(conn, row.id, row.next_run_at, upcoming)
    if won and upcoming is None:
        error = f"invalid cron expression: {row.cron_expr}"
        await _record(ctx, row, "error", error, None, None, empty_runs=None)
        return False
    return won


async def _busy_count(ctx: AppContext, ws_id: str) -> int | None:
    try:
        async with asyncio.timeout(DB_DEADLINE):
            async with ctx.engine.connect() as conn:
                state = await store.busy_state(conn, ws_id)
    except Exception:
        log.warning("schedule: capacity lookup for %s failed; firing anyway", ws_id, exc_info=True)
        return None
    if state is None or state.active_tasks < max(state.max_concurrent_tasks or 1, 1):
        return None
    return int(state.active_tasks)


def message_body(row: Any, context: str = "") -> bytes:
    message_id = f"cron-{row.id[:8]}-{uuid.uuid4().hex[:8]}"
    text = f"{context}\n{row.prompt}" if context else row.prompt
    message = {"role": "user", "messageId": message_id, "parts": [{"kind": "text", "text": text}]}
    return json.dumps({"method": "message/send", "params": {"message": message}}).encode()


async def _fire(ctx: AppContext, row: Any) -> None:
    from workspace_server.channels import hooks  # the workspace's Slack channels: context in, reply out
    from workspace_server.channels.inbound import reply_text

    started = time.monotonic()
    body = message_body(row, await hooks.channel_context(ctx, row.workspace_id))
    result = await proxy_a2a(ctx, row.workspace_id, body, "", True, timeout_seconds=FIRE_TIMEOUT_SECONDS)
    duration_ms = int((time.monotonic() - started) * 1000)
    status, error, empty_runs = _outcome(row, result)
    await _record(ctx, row, status, error, duration_ms, _request_log(row), empty_runs=empty_runs)
    reply = reply_text(result.status, result.json()) if status == "ok" and empty_runs == 0 else None
    if reply and not reply.startswith("Error:"):
        await hooks.broadcast(ctx, row.workspace_id, reply)


def _outcome(row: Any, result: ProxyResult) -> tuple[str, str, int | None]:
    """(status, error, new empty-reply streak or None to keep it)."""
    if result.outcome is Outcome.QUEUED:
        return "ok", "", None  # delivered later; says nothing about the agent's answers
    if result.body and not 200 <= result.status < 300:
        return "error", f"HTTP {result.status}", None  # the agent's own non-2xx reply
    error = reply_error(result)  # the proxy's refusal, or a JSON-RPC error in a 2xx reply
    if error is not None:
        return "error", error, None
    if not _is_empty(result.body):
        return "ok", "", 0
    streak = row.consecutive_empty_runs + 1
    if streak >= STALE_AFTER_EMPTY:
        why = f"empty response {streak} consecutive times — agent may be phantom-producing (#795)"
        return "stale", why, streak
    return "ok", "", streak


def _is_empty(body: bytes) -> bool:
    text = body.decode(errors="replace").strip()
    return not text or any(marker in text for marker in _EMPTY_MARKERS)


def _request_log(row: Any) -> dict[str, Any]:
    return {
        "schedule_id": row.id,
        "schedule_name": row.name,
        "cron_expr": row.cron_expr,
        "prompt": truncate_bytes(row.prompt, PROMPT_LOG_BYTES),
    }


async def _record_skip(ctx: AppContext, row: Any, active: int) -> None:
    reason = f"skipped: workspace busy (active_tasks={active})"
    request = {
        "schedule_id": row.id,
        "schedule_name": row.name,
        "cron_expr": row.cron_expr,
        "skipped": True,
        "active_tasks": active,
    }
    await _record(ctx, row, "skipped", reason, None, request, empty_runs=None)


async def _record(
    ctx: AppContext,
    row: Any,
    status: str,
    error: str,
    duration_ms: int | None,
    request: dict[str, Any] | None,
    *,
    empty_runs: int | None,
) -> None:
    """The run's outcome on the row, as a `cron_run` activity row, and as an event."""
    error = error.replace("\x00", "")  # agent-supplied text; Postgres text cannot hold NUL
    skipped = status == "skipped"
    async with asyncio.timeout(DB_DEADLINE):
        async with ctx.engine.begin() as conn:
            now = utcnow()
            await store.record_run(conn, row.id, at=now, status=status, error=error, empty_runs=empty_runs)
            await insert_activity(
                conn,
                workspace_id=row.workspace_id,
                activity_type="cron_run",
                method="cron",
                summary=f"Cron skipped: {row.name}" if skipped else f"Cron: {row.name}",
                request_body=request or _request_log(row),
                duration_ms=duration_ms,
                status=status,
                error_detail=error or None,
            )
    payload = {"schedule_id": row.id, "schedule_name": row.name}
    if skipped:
        await ctx.events.record("CRON_SKIPPED", row.workspace_id, {**payload, "reason": error})
    else:
        await ctx.events.record("CRON_EXECUTED", row.workspace_id, {**payload, "status": status})


async def sweep_phantom_busy(ctx: AppContext) -> list[str]:
    async with asyncio.timeout(DB_DEADLINE):
        async with ctx.engine.begin() as conn:
            found = await store.reset_phantom_busy(conn, utcnow() - PHANTOM_QUIET)
    if found:
        log.info("reset the task count of %d quiet workspaces: %s", len(found), found)
    return found
