"""The A2A proxy's forward stage: one exchange with the agent and what its result means for delivery.

What a transport failure means for delivery decides what may be retried (spec 04 §7/§8 fixes):
- refused/unreachable, or reset/EOF before any reply ("busy"): the agent did not take the message, so
  it may be sent again (busy → queued, drained later);
- idle timeout: the agent has it and went quiet. It is NOT busy (upstream re-queued it and delivered it
  twice); the caller gets 504 and nothing resends it;
- any HTTP reply, even an error or a body cut short: delivered.
A transport failure also asks our backend whether the agent's instance is still there (`_container_dead`).
"""

from __future__ import annotations

import logging
import time

from workspace_server.a2a import record, store
from workspace_server.a2a import schemas as msg
from workspace_server.a2a.caches import queue_hint, url_cache
from workspace_server.a2a.call import (
    EXTERNAL,
    LOGGER,
    Call,
    Outcome,
    ProxyResult,
    agent_json,
    encode,
    fail,
    message_id,
    restart,
    status_phrase,
)
from workspace_server.a2a.pool import IdleTimeout, a2a_client, idle_watch, run_watched
from workspace_server.a2a.transport import Disconnected, InvalidURL, Reply
from workspace_server.activity.service import sorted_keys
from workspace_server.common.kv import clear_workspace_keys
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.egress.clients import refused_cause
from workspace_server.registry.service import has_capability, idle_timeout_override
from workspace_server.workspaces.status import Status

log = logging.getLogger(LOGGER)

DEFAULT_IDLE_SECONDS = 300


def _idle_seconds(ctx: AppContext, ws_id: str) -> float:
    override = idle_timeout_override(ctx, ws_id)
    if override:
        return float(override)
    n = ctx.settings.A2A_IDLE_TIMEOUT_SECONDS
    return float(n) if n > 0 else float(DEFAULT_IDLE_SECONDS)


async def dispatch(call: Call, url: str, data: bytes, assigned_url: bool = False) -> ProxyResult:
    ctx = call.ctx
    ex = Reply(started=time.perf_counter())
    try:
        await run_watched(
            idle_watch(ctx),
            call.target,
            a2a_client(ctx, assigned_url).post(url, data, ex),
            _idle_seconds(ctx, call.target),
            call.ceiling,
        )
    except InvalidURL as e:
        log.warning("a2a: cannot build request to %s: %s", call.target, e)
        return fail(500, {"error": msg.BUILD_FAILED}, Outcome.NOT_DELIVERED)
    except Exception as e:
        if ex.status is None and (refused := refused_cause(e)) is not None:
            # the name resolved to an address the policy refuses (checked when the connection opened)
            log.warning("a2a: unsafe url for workspace %s at connect time: %s", call.target, refused)
            return fail(502, {"error": msg.NOT_ROUTABLE}, Outcome.NOT_DELIVERED)
        if ex.status is not None:
            return _read_failed(call, ex, e)
        ex.duration_ms = int((time.perf_counter() - ex.started) * 1000)
        return await _transport_failed(call, ex, e)
    return _replied(call, ex)


def _replied(call: Call, ex: Reply) -> ProxyResult:
    status = ex.status or 0
    if call.log:
        record.log_reply(call, status, ex.body, ex.duration_ms)
    if b'"usage"' in ex.body:
        record.count_usage(call, ex.body)
    result = ProxyResult(status, ex.body, outcome=Outcome.DELIVERED, method=call.method)
    if status >= 300:
        result.error = {"error": _agent_error(ex.body, status)}
    return result


def _agent_error(body: bytes, status: int) -> str:
    top = agent_json(body)
    if isinstance(top, dict) and isinstance(top.get("error"), str):
        return str(top["error"])
    return status_phrase(status, "")


def _read_failed(call: Call, ex: Reply, exc: BaseException) -> ProxyResult:
    status = ex.status or 0
    confirmed = 200 <= status < 400
    log.warning("a2a: reading the reply of %s failed (status=%s): %r", call.target, status, exc)
    if call.log and confirmed:
        record.log_reply(call, status, b"", ex.duration_ms)
    body = {"error": msg.READ_FAILED, "delivery_confirmed": confirmed}
    return fail(502, body, Outcome.DELIVERED)


def _busy_error(exc: BaseException) -> bool:
    """Reset or EOF before any reply: the agent dropped the request unprocessed (spec 04 §1.6).

    A refused, unresolvable or timed-out connect (`ConnectFailed`) is not busy: nothing is listening."""
    return isinstance(exc, Disconnected | ConnectionResetError)


def _failure_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:500]


async def _transport_failed(call: Call, ex: Reply, exc: BaseException) -> ProxyResult:
    log.info("a2a: dispatch to %s failed: %r", call.target, exc)
    idle = isinstance(exc, IdleTimeout)
    busy = not idle and _busy_error(exc)
    dead = await _container_dead(call)
    quiet_busy = (
        busy and not dead and (call.from_queue or not has_capability(call.ctx, call.target, "session"))
    )
    if call.log and not quiet_busy:
        record.log_failure(call, _failure_text(exc), ex.duration_ms)
    if dead:
        body = {"error": msg.RESTARTING, "restarting": True}
        return fail(503, body, Outcome.UNKNOWN if idle else Outcome.NOT_DELIVERED)
    if idle:
        return fail(504, {"error": msg.IDLE_TIMEOUT, "timeout": True}, Outcome.UNKNOWN)
    if busy:
        return await _busy(call)
    return fail(502, {"error": msg.UNREACHABLE}, Outcome.NOT_DELIVERED)


async def _container_dead(call: Call) -> bool:
    """Our backend says the agent's instance is gone: mark offline, clear the cache, restart it."""
    ctx = call.ctx
    backend = ctx.provisioner
    is_running = getattr(backend, "is_running", None)
    runtime = call.row.runtime if call.row is not None else ""
    if not callable(is_running) or runtime == EXTERNAL:
        return False
    try:
        if await is_running(call.target):
            return False
    except Exception:
        log.warning("a2a: is_running(%s) failed; assuming alive", call.target, exc_info=True)
        return False
    log.warning("a2a: instance of %s is not running; marking offline and restarting", call.target)
    try:
        changed = await ctx.lifecycle.mark_offline(
            call.target, expect=None, not_in=(Status.REMOVED, Status.PROVISIONING, Status.OFFLINE)
        )
    except Exception:
        log.exception("a2a: marking %s offline failed", call.target)
        changed = False
    try:
        await clear_workspace_keys(ctx.kv, call.target)
    except Exception:
        log.exception("a2a: clearing cache keys of %s failed", call.target)
    url_cache(ctx).drop(call.target)  # a call that read the URL between the OFFLINE event and the clear
    if changed:
        restart(ctx, call.target, "restart")
    return True


async def _busy(call: Call) -> ProxyResult:
    ctx = call.ctx
    retry = {"Retry-After": str(msg.BUSY_RETRY_AFTER)}
    if has_capability(ctx, call.target, "session"):
        body = {
            "error": msg.BUSY_SESSION,
            "busy": True,
            "retry_after": msg.BUSY_RETRY_AFTER,
            "native_session": True,
        }
        return fail(503, body, Outcome.BUSY, retry)
    busy_body = {"error": msg.BUSY_RETRY, "busy": True, "retry_after": msg.BUSY_RETRY_AFTER}
    if call.from_queue:
        return fail(503, busy_body, Outcome.BUSY, retry)
    try:
        async with ctx.engine.begin() as conn:
            queue_id = await store.enqueue(
                conn,
                ws_id=call.target,
                caller_id=call.caller or None,
                body=call.request,
                method=call.method or None,
                key=message_id(call.request) or None,
                now=utcnow(),
            )
        queue_hint(ctx).touch(call.target)
    except Exception:
        log.exception("a2a: enqueue for busy %s failed", call.target)
        if call.log:
            record.log_failure(call, "enqueue failed", 0)
        return fail(503, busy_body, Outcome.BUSY, retry)
    try:
        await queue_hint(ctx).announce(call.target)
    except Exception as exc:  # the item is queued all the same; only other replicas' hints miss it
        log.warning(
            "a2a: queue epoch of %s not bumped (%s): replicas may trust an empty queue for %.0f s",
            call.target,
            exc,
            queue_hint(ctx).RECHECK,
        )
    return await queued_reply(call, queue_id)


async def queued_reply(call: Call, queue_id: str) -> ProxyResult:
    depth = 0
    try:
        async with call.ctx.autocommit.connect() as conn:
            depth = await store.queue_depth(conn, call.target)
    except Exception:
        log.exception("a2a: queue depth of %s unavailable", call.target)
    body = {"queued": True, "queue_id": queue_id, "queue_depth": depth, "message": msg.BUSY_QUEUED}
    return ProxyResult(202, encode(sorted_keys(body)), outcome=Outcome.QUEUED, method=call.method)
