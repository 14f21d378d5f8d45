"""The A2A proxy pipeline (spec 04 §1.2–§1.8), usable in-process: `proxy_a2a(ctx, target, body, caller)`.

hierarchy → budget → URL (cache, then DB) → SSRF → JSON-RPC normalisation → dispatch → result mapping →
side effects (activity row, A2A_RESPONSE, last_outbound_at, token usage) in the background.

This module is the access stage and the entry point; the rest of the pipeline stands below it:
`forward` (the exchange with the agent, replies, transport failures, busy → queue), `record` (activity
rows and token usage after the answer), `pool` (the agent connection pools, the idle watch), `caches` (target
rows, queue hints) and `call` (the call's state and result, shared by every stage).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from workspace_server.a2a import schemas as msg
from workspace_server.a2a import store
from workspace_server.a2a.caches import queue_hint, target_cache, url_cache
from workspace_server.a2a.call import (
    EXTERNAL,
    LOGGER,
    Call,
    Outcome,
    ProxyResult,
    encode,
    fail,
    message_id,
    restart,
)
from workspace_server.a2a.forward import dispatch, queued_reply
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id
from workspace_server.common.jsonnum import decode_document
from workspace_server.common.kv import URL_TTL, url_key
from workspace_server.context import AppContext
from workspace_server.egress import UnsafeURL, assigned, policy_for
from workspace_server.registry.access import can_communicate
from workspace_server.registry.service import TRUSTED_URL_PREFIX, assigned_dial_url
from workspace_server.workspaces.status import Status

# The proxy's interface, as its callers (routes, queue, delegation, cron, channels, webhooks) import it.
__all__ = ["MAX_REQUEST_BYTES", "Outcome", "ProxyResult", "normalise", "proxy_a2a"]

log = logging.getLogger(LOGGER)

MAX_REQUEST_BYTES = 1 << 20  # larger request bodies are cut (spec 04 §1.2)
CEILING_SECONDS = 30 * 60  # absolute cap on one dispatch (workspace callers, or X-Timeout)


async def proxy_a2a(
    ctx: AppContext,
    target_id: str,
    body: bytes,
    caller: str = "",
    log_activity: bool = True,
    *,
    timeout_seconds: int | None = None,
    from_queue: bool = False,
) -> ProxyResult:
    """Send an A2A request to a workspace as `caller` ("" = canvas, `system:…` = in-process services).

    Caller authentication is the HTTP route's job; this applies the hierarchy, budget and delivery rules.
    `from_queue` is the drain's re-dispatch: a busy target is reported (BUSY), not queued again.
    """
    if timeout_seconds and timeout_seconds > 0:
        ceiling: float | None = min(timeout_seconds, CEILING_SECONDS)
    else:
        ceiling = CEILING_SECONDS if caller else None
    call = Call(ctx, target_id, caller, log_activity, ceiling, from_queue)
    try:
        return await _run(call, body[:MAX_REQUEST_BYTES])
    except ApiError as e:
        return fail(e.status, e.body, Outcome.NOT_DELIVERED, e.headers)


_INVALID = object()


async def _run(call: Call, raw: bytes) -> ProxyResult:
    ctx = call.ctx
    if call.is_workspace_caller and call.caller != call.target:
        if not await can_communicate(ctx.engine, call.caller, call.target):
            raise ApiError(403, msg.ACCESS_DENIED)
    payload = _parse(raw)
    key = message_id(payload)
    queued_id = await _load_target(call, key)
    _check_budget(call)
    url = await _resolve_url(call)
    assigned_url = _check_url(call, url)
    if assigned_url:
        url = assigned_dial_url(call.ctx, call.target, url)
    if not isinstance(payload, dict):
        raise ApiError(400, msg.INVALID_JSON)
    envelope = normalise(payload)
    call.request = envelope
    call.method = envelope["method"] if isinstance(envelope.get("method"), str) else ""
    if queued_id:
        # The same message is already waiting for this target: sending it now would deliver it twice.
        return await queued_reply(call, queued_id)
    call.encoded = encode(envelope)
    return await dispatch(call, url, call.encoded, assigned_url)


def _parse(raw: bytes) -> Any:
    """The request, or _INVALID: the rules of every body (`jsonnum.decode_document`: malformed JSON, a
    number beyond float range, a lone surrogate, nesting past MAX_JSON_DEPTH), except that NUL is kept."""
    try:
        return decode_document(raw, allow_nul=True)  # NUL is fine on the wire (the log scrubs it)
    except (ValueError, UnicodeDecodeError):
        return _INVALID


def normalise(payload: dict[str, Any]) -> dict[str, Any]:
    """JSON-RPC 2.0 envelope when `jsonrpc` is absent; a messageId in `params.message` when missing."""
    if "jsonrpc" not in payload:
        payload = {
            "jsonrpc": "2.0",
            "id": new_id(),
            "method": payload.get("method"),
            "params": payload.get("params"),
        }
    params = payload.get("params")
    message = params.get("message") if isinstance(params, dict) else None
    if isinstance(message, dict) and "messageId" not in message:
        message["messageId"] = new_id()
    return payload


async def _load_target(call: Call, key: str) -> str | None:
    """Fill `call.row` (cached briefly); the queued item already holding this message, if any.

    The queue is looked at only when the message brings its own messageId and the target's queue is
    not known to be empty (QueueHint): the common call costs no queue query at all.
    """
    ctx = call.ctx
    hint = queue_hint(ctx)
    mark = None  # set when the queue must be looked at: the mark of that look
    if key and not call.from_queue:
        known_empty, look = await hint.look(call.target)
        mark = None if known_empty else look
    call.row = target_cache(ctx).get(call.target)
    if call.row is None:
        try:
            call.row = await target_cache(ctx).load(
                call.target, functools.partial(_target_row, ctx, call.target)
            )
        except Exception:
            log.exception("a2a: target lookup failed for %s", call.target)
            call.row_error = True
            return None
    if mark is None or call.row is None:
        return None
    try:
        async with ctx.autocommit.connect() as conn:
            queued_id, active = await store.queue_probe(conn, call.target, key)
    except Exception:
        log.exception("a2a: queue probe failed for %s", call.target)
        return None
    if not active:
        hint.seen_empty(call.target, since=mark)
    return queued_id


async def _target_row(ctx: AppContext, ws_id: str) -> store.TargetRow | None:
    async with ctx.autocommit.connect() as conn:
        return await store.target_row(conn, ws_id)


def _check_budget(call: Call) -> None:
    row = call.row  # unreadable or missing: fail open (the URL step answers for a missing row)
    if row is not None and row.budget_limit is not None and (row.monthly_spend or 0) >= row.budget_limit:
        raise ApiError(402, msg.BUDGET_EXCEEDED)


async def _resolve_url(call: Call) -> str:
    ctx = call.ctx
    cached = url_cache(ctx).get(call.target)
    if cached is None:
        try:
            cached = await url_cache(ctx).load(
                call.target, functools.partial(ctx.kv.get, url_key(call.target))
            )
        except Exception:
            log.exception("a2a: url cache read failed for %s", call.target)
            cached = None
    if cached:
        return cached
    if call.row_error:
        raise ApiError(500, msg.LOOKUP_FAILED)
    row = call.row
    if row is None:
        raise ApiError(404, msg.NOT_FOUND)
    if not row.url:
        if row.status == Status.HIBERNATED:
            restart(ctx, call.target, "wake")
            raise ApiError(
                503,
                msg.WAKING,
                waking=True,
                retry_after=msg.WAKE_RETRY_AFTER,
                headers={"Retry-After": str(msg.WAKE_RETRY_AFTER)},
            )
        err = ApiError(503, msg.NO_URL)
        err.body["status"] = row.status
        raise err
    try:
        await ctx.kv.set(url_key(call.target), row.url, URL_TTL)
    except Exception:
        log.exception("a2a: url cache write failed for %s", call.target)
    return str(row.url)


def _assigned(call: Call, url: str) -> bool:
    """Whether our own backend assigned `url` to the target (never true for anything an agent sent).

    Either the orchestrator recorded it when the start succeeded (`egress.assigned`), or — after a
    restart of this server, with the record gone — the row holds the `http://127.0.0.1:<port>` the
    orchestrator wrote for a workspace it provisions: registration cannot write that form (loopback
    literals are refused, and a provisioner URL on the row is never replaced), an external workspace's
    admin-given URL does not count. Both need a backend installed, and the URL must be the row's.
    """
    ctx = call.ctx
    row = call.row
    if row is None or row.url != url or ctx.provisioner is None:
        return False
    if assigned(ctx).is_assigned(call.target, url):
        return True
    return url.startswith(TRUSTED_URL_PREFIX) and row.runtime != EXTERNAL


def _check_url(call: Call, url: str) -> bool:
    """The egress step before a dial: True for a server-assigned URL, else the URL's form and (for an IP
    literal) its address are checked here, its name's addresses at connect time. 502 when refused."""
    if _assigned(call, url):
        return True
    try:
        policy_for(call.ctx.settings).check_static(url)
    except UnsafeURL as e:
        log.warning("a2a: unsafe url for workspace %s: %s", call.target, e)
        raise ApiError(502, msg.NOT_ROUTABLE) from None
    return False
