"""The A2A queue (spec 04 §1.7): busy targets' messages, drained one per heartbeat with spare capacity.

Delivery rules (the reference lost or duplicated messages here, spec 04 §8.2–§8.5):
- an item is claimed by one statement (`FOR UPDATE SKIP LOCKED` on Postgres, compare-and-set on
  SQLite), so two drains never send the same item;
- the claim is a lease: the drain renews `dispatched_at` while the call runs, and an item whose lease
  ran out (the process died mid-dispatch) is put back in the queue by the next drain;
- a busy target on re-dispatch leaves the item queued (upstream marked it completed: lost);
- an idle timeout on re-dispatch fails the item (the agent may have it: resending could duplicate);
- any reply from the agent completes it; at most MAX_ATTEMPTS claims, then `failed`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

from workspace_server.a2a import delegation, store
from workspace_server.a2a.caches import queue_hint
from workspace_server.a2a.call import spawn
from workspace_server.a2a.proxy import Outcome, ProxyResult, proxy_a2a
from workspace_server.common.errors import ApiError
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
LEASE_SECONDS = 120.0
RENEW_SECONDS = 30.0
DEFAULT_STALE_MINUTES = 60


def install(ctx: AppContext) -> None:
    """Let heartbeats with spare capacity drain the queue (registry calls `ctx.queue_drain`)."""

    def hook(ws_id: str) -> Any:
        return drain_one(ctx, ws_id)

    ctx.queue_drain = hook


async def drain_one(ctx: AppContext, ws_id: str) -> str | None:
    """Dispatch the next queued item of `ws_id`; its new status, or None when nothing was sent.

    One drain per workspace at a time in this process: a second heartbeat arriving mid-drain would
    otherwise hand a capacity-1 agent two messages at once and bounce the second as busy.
    """
    draining = ctx.a2a.draining
    hint = queue_hint(ctx)
    if ws_id in draining:
        return None
    draining.add(ws_id)
    try:
        known_empty, mark = await hint.look(ws_id)
        if known_empty:
            return None
        item = await _claim(ctx, ws_id)
        if item is None:
            hint.seen_empty(ws_id, since=mark)
            return None
        renewer = spawn(ctx, _renew(ctx, str(item.id)), f"a2a-lease:{item.id}")
        try:
            result = await proxy_a2a(
                ctx, ws_id, _encode(item.body), item.caller_id or "", log_activity=True, from_queue=True
            )
        finally:
            renewer.cancel()
        return await _settle(ctx, item, result)
    finally:
        draining.discard(ws_id)


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def _claim(ctx: AppContext, ws_id: str) -> Any:
    """Reclaim expired leases, then claim the next item: one write transaction, only when there is work.

    A read-only probe first (one index lookup on the autocommit pool) keeps the common idle heartbeat
    off the write path once the QueueHint's trust window has lapsed.
    """
    async with ctx.autocommit.connect() as conn:
        if not await store.has_pending(conn, ws_id):
            return None
    now = utcnow()
    async with ctx.engine.begin() as conn:
        expired = await store.reclaim_expired(
            conn, ws_id, cutoff=now - timedelta(seconds=LEASE_SECONDS), max_attempts=MAX_ATTEMPTS
        )
        item = await store.claim_next(conn, ws_id, now)
    for row in expired:
        log.warning("a2a queue: item %s of %s lost its dispatcher; now %s", row.id, ws_id, row.status)
        if row.status == "failed":
            await _delegation_outcome(ctx, row, None, "dispatch lease expired")
    return item


async def _renew(ctx: AppContext, item_id: str) -> None:
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        try:
            async with ctx.engine.begin() as conn:
                await store.renew_lease(conn, item_id, utcnow())
        except Exception:
            log.exception("a2a queue: lease renewal of %s failed", item_id)


async def _settle(ctx: AppContext, item: Any, result: ProxyResult) -> str:
    item_id = str(item.id)
    if result.outcome is Outcome.DELIVERED:
        note = result.error_text() if result.error is not None else None
        async with ctx.engine.begin() as conn:
            await store.mark_completed(conn, item_id, utcnow(), note)
        await _delegation_outcome(ctx, item, result, note)
        return "completed"
    if result.outcome is Outcome.UNKNOWN:
        error = "delivery unknown: " + result.error_text()
        async with ctx.engine.begin() as conn:
            await store.mark_failed(conn, item_id, error)
        await _delegation_outcome(ctx, item, None, error)
        return "failed"
    error = result.error_text() or "unknown drain dispatch error"
    async with ctx.engine.begin() as conn:
        status = await store.requeue(conn, item_id, error, MAX_ATTEMPTS)
    log.info("a2a queue: item %s of %s not delivered (%s); now %s", item_id, item.workspace_id, error, status)
    if status == "failed":
        await _delegation_outcome(ctx, item, None, error)
    return status


def _delegation_id(body: Any) -> str:
    params = body.get("params") if isinstance(body, dict) else None
    message = params.get("message") if isinstance(params, dict) else None
    meta = message.get("metadata") if isinstance(message, dict) else None
    value = meta.get("delegation_id") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else ""


async def _delegation_outcome(
    ctx: AppContext, item: Any, result: ProxyResult | None, error: str | None
) -> None:
    """A queued delegation reached its end: finish the caller's delegation rows (spec 04 §1.7)."""
    delegation_id = _delegation_id(item.body)
    if not delegation_id or not item.caller_id:
        return
    try:
        await delegation.finish_from_queue(
            ctx, str(item.caller_id), str(item.workspace_id), delegation_id, result, error
        )
    except Exception:
        log.exception("a2a queue: finishing delegation %s failed", delegation_id)


async def drop_stale(ctx: AppContext, max_age_minutes: int, ws_id: str | None) -> int:
    cutoff = utcnow() - timedelta(minutes=max_age_minutes)
    try:
        async with ctx.engine.begin() as conn:
            rows = await store.drop_stale(conn, cutoff=cutoff, ws_id=ws_id)
    except Exception:
        log.exception("a2a queue: drop-stale failed")
        raise ApiError(500, "failed to drop stale items") from None
    log.info(
        "a2a queue: dropped %d stale items (workspace_id=%s, max_age=%dm)", len(rows), ws_id, max_age_minutes
    )
    for row in rows:
        await _delegation_outcome(ctx, row, None, "dropped from the queue as stale")
    return len(rows)
