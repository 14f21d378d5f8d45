"""The A2A proxy pipeline (spec 04 §1.2–§1.8), usable in-process: `proxy_a2a(ctx, target, body, caller)`.

hierarchy → budget → URL (cache, then DB) → SSRF → JSON-RPC normalisation → dispatch → result mapping →
side effects (activity row, A2A_RESPONSE, last_outbound_at, token usage) in the background.

What a transport failure means for delivery decides what may be retried (spec 04 §7/§8 fixes):
- refused/unreachable, or reset/EOF before any reply ("busy"): the agent did not take the message, so
  it may be sent again (busy → queued, drained later);
- idle timeout: the agent has it and went quiet. It is NOT busy (upstream re-queued it and delivered it
  twice); the caller gets 504 and nothing resends it;
- any HTTP reply, even an error or a body cut short: delivered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from http import HTTPStatus
from typing import Any

import aiohttp
import yarl

from workspace_server.a2a import schemas as msg
from workspace_server.a2a import store
from workspace_server.a2a.logwriter import writer
from workspace_server.activity.service import sorted_keys
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id
from workspace_server.common.jsonnum import decode_document
from workspace_server.common.kv import URL_TTL, clear_workspace_keys, url_key
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.egress import UnsafeURL, assigned, policy_for
from workspace_server.egress.clients import guarded_connector, refused_cause
from workspace_server.events.bus import Event
from workspace_server.registry.access import can_communicate
from workspace_server.registry.service import (
    TRUSTED_URL_PREFIX,
    assigned_dial_url,
    has_capability,
    idle_timeout_override,
)
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20  # larger request bodies are cut (spec 04 §1.2)
MAX_RESPONSE_BYTES = 10 << 20
CEILING_SECONDS = 30 * 60  # absolute cap on one dispatch (workspace callers, or X-Timeout)
DEFAULT_IDLE_SECONDS = 300
# No read/write timeout: the idle watch decides when a quiet agent has had long enough. `connect` bounds
# the wait for a pooled connection plus the connect itself; `sock_connect` the TCP connect alone.
DISPATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30.0, sock_connect=10.0)
DISPATCH_HEADERS = {"Content-Type": "application/json"}
EXTERNAL = "external"
MAX_CONNECTIONS = 2000  # agent calls in flight at once, all agents together
KEEPALIVE_SECONDS = 5.0  # idle agent connections are closed after this
READ_CHUNK = 64 << 10
ENCODING = "Content-Encoding"  # a compressed reply is read in chunks: its decoded size is not declared

TASKS_GROUP = "a2a"  # the supervisor group of the proxy's background work


class Outcome(StrEnum):
    DELIVERED = "delivered"  # the agent answered (any HTTP status)
    NOT_DELIVERED = "not_delivered"  # refused before it reached the agent: safe to send again
    UNKNOWN = "unknown"  # sent, never answered: never resent
    QUEUED = "queued"  # busy target; the queue delivers it later
    BUSY = "busy"  # busy target; nothing queued


@dataclass
class ProxyResult:
    """`error` set: the client gets `error` as JSON; otherwise `body` verbatim (the agent's bytes)."""

    status: int
    body: bytes = b""
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    outcome: Outcome = Outcome.DELIVERED
    method: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except (ValueError, RecursionError):  # an agent's reply: nesting depth unbounded
            return None

    def error_text(self) -> str:
        text = (self.error or {}).get("error")
        if isinstance(text, str) and text:
            return text
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "unknown error"


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _fail(
    status: int, body: dict[str, Any], outcome: Outcome, headers: dict[str, str] | None = None
) -> ProxyResult:
    return ProxyResult(status, error=sorted_keys(body), headers=headers or {}, outcome=outcome)


# ---- background work: on the app's task supervisor (common/tasks.py), drained at shutdown ----


def spawn(ctx: AppContext, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    return ctx.tasks.spawn(name, _logged(coro, name), group=TASKS_GROUP)


async def _logged(coro: Coroutine[Any, Any, Any], name: str) -> Any:
    try:
        return await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("a2a background task %s failed", name)
        return None


# ---- the outbound client ----


def a2a_client(ctx: AppContext, assigned_url: bool = False) -> aiohttp.ClientSession:
    """The pool for agent calls, created on first use (inside the running loop) and closed by `close_client`.

    Agent-supplied URLs go through the egress policy's resolver (egress/clients.py): a name whose
    answers include an address the policy refuses fails at connect time, so DNS rebinding cannot get past
    the check made before the call. URLs this server's backend assigned (`assigned_url`) use a second
    pool with the default resolver: they may be loopback or a container name on the Docker network.

    aiohttp rather than the shared httpx `ctx.http`: this is the data path of every A2A message, and with
    50 calls in flight httpx spent ~1.5 ms of CPU per request against aiohttp's ~0.12 ms (its pool
    rescans every connection per request, its parser is pure Python); see docs/decisions.md. Its own
    pool, too: A2A calls last minutes, so a few dozen in flight would starve every other outbound call.
    """
    parts = ctx.a2a
    client = parts.trusted_client if assigned_url else parts.client
    if client is None:
        limits: dict[str, Any] = {
            "limit": MAX_CONNECTIONS,
            "limit_per_host": 0,
            "keepalive_timeout": KEEPALIVE_SECONDS,
        }
        if assigned_url:
            connector = aiohttp.TCPConnector(**limits)
        else:
            connector = guarded_connector(policy_for(ctx.settings), **limits)
        # No cookie jar: agents share hosts (127.0.0.1, ports apart), and cookies do not isolate by port,
        # so one agent's Set-Cookie would be sent to the others.
        client = aiohttp.ClientSession(
            connector=connector,
            timeout=DISPATCH_TIMEOUT,
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        if assigned_url:
            parts.trusted_client = client
        else:
            parts.client = client
    return client


async def close_client(ctx: AppContext) -> None:
    parts = ctx.a2a
    clients = (parts.client, parts.trusted_client)
    parts.client = parts.trusted_client = None
    for client in clients:
        if client is not None:
            await client.close()


# ---- idle watch: the time of the last bus event per workspace with a dispatch in flight ----


class IdleWatch:
    """One bus listener for all dispatches (not one subscription per request)."""

    def __init__(self) -> None:
        self._seen: dict[str, list[float]] = {}  # ws -> [last event (monotonic), dispatches in flight]

    def on_event(self, event: Event) -> None:
        rec = self._seen.get(event.workspace_id or "")
        if rec is not None:
            rec[0] = time.monotonic()

    def enter(self, ws_id: str) -> None:
        rec = self._seen.setdefault(ws_id, [0.0, 0.0])
        rec[1] += 1

    def leave(self, ws_id: str) -> None:
        rec = self._seen.get(ws_id)
        if rec is not None:
            rec[1] -= 1
            if rec[1] <= 0:
                del self._seen[ws_id]

    def last_event(self, ws_id: str) -> float:
        rec = self._seen.get(ws_id)
        return rec[0] if rec else 0.0


def idle_watch(ctx: AppContext) -> IdleWatch:
    return ctx.a2a.idle_watch


class IdleTimeout(Exception):
    def __init__(self, seconds: float, ceiling: bool) -> None:
        super().__init__(
            f"no reply and no activity for {seconds:g}s" if not ceiling else "dispatch ceiling reached"
        )
        self.ceiling = ceiling


async def run_watched(
    watch: IdleWatch, ws_id: str, coro: Coroutine[Any, Any, Any], idle: float, ceiling: float | None
) -> Any:
    """Await `coro`, cancelling it after `idle` seconds without a bus event for `ws_id` (or at `ceiling`).

    A timer re-arms itself while events keep coming (as `asyncio.timeout` does, without a second task).
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    hard = start + ceiling if ceiling else None
    fired: list[bool] = []
    handle: asyncio.TimerHandle | None = None

    def deadline() -> float:
        soft = max(start, watch.last_event(ws_id)) + idle
        return soft if hard is None else min(soft, hard)

    def check() -> None:
        nonlocal handle
        remaining = deadline() - time.monotonic()
        if remaining > 0:
            handle = loop.call_later(remaining, check)
            return
        fired.append(hard is not None and deadline() >= hard)
        task.cancel()

    handle = loop.call_later(idle if hard is None else min(idle, ceiling or idle), check)
    watch.enter(ws_id)
    try:
        return await coro
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise IdleTimeout(idle, ceiling=fired[0]) from None
        raise
    finally:
        if handle is not None:
            handle.cancel()
        watch.leave(ws_id)


# ---- the pipeline ----


@dataclass
class Call:
    ctx: AppContext
    target: str
    caller: str
    log: bool
    ceiling: float | None
    from_queue: bool
    method: str = ""
    row: Any = None  # store.target_row result, None when missing or unreadable
    row_error: bool = False
    request: Any = None  # the normalised envelope (dict)

    @property
    def is_workspace_caller(self) -> bool:
        return bool(self.caller) and not msg.is_system_caller(self.caller)

    @property
    def target_name(self) -> str:
        return str(self.row.name) if self.row is not None and self.row.name else self.target


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
        return _fail(e.status, e.body, Outcome.NOT_DELIVERED, e.headers)


_INVALID = object()


async def _run(call: Call, raw: bytes) -> ProxyResult:
    ctx = call.ctx
    if call.is_workspace_caller and call.caller != call.target:
        if not await can_communicate(ctx.engine, call.caller, call.target):
            raise ApiError(403, msg.ACCESS_DENIED)
    payload = _parse(raw)
    key = _message_id(payload)
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
        return await _queued_reply(call, queued_id)
    return await _dispatch(call, url, _encode(envelope), assigned_url)


def _parse(raw: bytes) -> Any:
    """The request, or _INVALID: the rules of every body (`jsonnum.decode_document`: malformed JSON, a
    number beyond float range, a lone surrogate, nesting past MAX_JSON_DEPTH), except that NUL is kept."""
    try:
        return decode_document(raw, allow_nul=True)  # NUL is fine on the wire (the log scrubs it)
    except (ValueError, UnicodeDecodeError):
        return _INVALID


def _message_id(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    params = payload.get("params")
    message = params.get("message") if isinstance(params, dict) else None
    mid = message.get("messageId") if isinstance(message, dict) else None
    return mid if isinstance(mid, str) else ""


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
    call.row = target_cache(ctx).get(call.target)
    probe = bool(key) and not call.from_queue and not hint.probably_empty(call.target)
    if call.row is None:
        try:
            call.row = await target_cache(ctx).load(
                call.target, functools.partial(_target_row, ctx, call.target)
            )
        except Exception:
            log.exception("a2a: target lookup failed for %s", call.target)
            call.row_error = True
            return None
    if not probe or call.row is None:
        return None
    mark = hint.mark()
    try:
        async with ctx.autocommit.connect() as conn:
            queued_id, active = await store.queue_probe(conn, call.target, key)
    except Exception:
        log.exception("a2a: queue probe failed for %s", call.target)
        return None
    if not active:
        hint.seen_empty(call.target, since=mark)
    return queued_id


async def _target_row(ctx: AppContext, ws_id: str) -> Any:
    async with ctx.autocommit.connect() as conn:
        return await store.target_row(conn, ws_id)


def _check_budget(call: Call) -> None:
    row = call.row  # unreadable or missing: fail open (the URL step answers for a missing row)
    if row is not None and row.budget_limit is not None and (row.monthly_spend or 0) >= row.budget_limit:
        raise ApiError(402, msg.BUDGET_EXCEEDED)


async def _resolve_url(call: Call) -> str:
    ctx = call.ctx
    try:
        cached = await ctx.kv.get(url_key(call.target))
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
            _restart(ctx, call.target, "wake")
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


def _restart(ctx: AppContext, ws_id: str, why: str) -> None:
    hook = ctx.restart_hook
    if hook is None:
        log.warning("a2a: %s of %s wanted but no restart hook is installed", why, ws_id)
        return

    async def run() -> None:
        await hook(ws_id)

    spawn(ctx, run(), f"a2a-{why}:{ws_id}")


# ---- dispatch ----


@dataclass
class _Exchange:
    status: int | None = None
    duration_ms: int = 0
    body: bytes = b""


class _TooLarge(Exception):
    pass


def _idle_seconds(ctx: AppContext, ws_id: str) -> float:
    override = idle_timeout_override(ctx, ws_id)
    if override:
        return float(override)
    n = ctx.settings.A2A_IDLE_TIMEOUT_SECONDS
    return float(n) if n > 0 else float(DEFAULT_IDLE_SECONDS)


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> yarl.URL:
    """Agent URLs repeat: parse each once, not on every call."""
    try:
        return yarl.URL(url)
    except ValueError as e:  # e.g. a port out of range: what aiohttp reports when it parses the URL itself
        raise aiohttp.InvalidURL(url, str(e)) from e


async def _exchange(http: aiohttp.ClientSession, url: str, data: bytes, ex: _Exchange) -> None:
    started = time.perf_counter()
    target = _parsed(url)
    async with http.post(target, data=data, headers=DISPATCH_HEADERS, allow_redirects=False) as response:
        ex.status = response.status
        ex.duration_ms = int((time.perf_counter() - started) * 1000)
        declared = response.content_length
        if declared is not None and declared <= MAX_RESPONSE_BYTES and not response.headers.get(ENCODING):
            ex.body = await response.read()  # the usual reply: its length known, nothing to decompress
            return
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _TooLarge
            chunks.append(chunk)
        ex.body = b"".join(chunks)


async def _dispatch(call: Call, url: str, data: bytes, assigned_url: bool = False) -> ProxyResult:
    ctx = call.ctx
    ex = _Exchange()
    started = time.perf_counter()
    try:
        await run_watched(
            idle_watch(ctx),
            call.target,
            _exchange(a2a_client(ctx, assigned_url), url, data, ex),
            _idle_seconds(ctx, call.target),
            call.ceiling,
        )
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as e:
        log.warning("a2a: cannot build request to %s: %s", call.target, e)
        return _fail(500, {"error": msg.BUILD_FAILED}, Outcome.NOT_DELIVERED)
    except Exception as e:
        if ex.status is None and (refused := refused_cause(e)) is not None:
            # the name resolved to an address the policy refuses (checked when the connection opened)
            log.warning("a2a: unsafe url for workspace %s at connect time: %s", call.target, refused)
            return _fail(502, {"error": msg.NOT_ROUTABLE}, Outcome.NOT_DELIVERED)
        if ex.status is not None:
            return _read_failed(call, ex, e)
        ex.duration_ms = int((time.perf_counter() - started) * 1000)
        return await _transport_failed(call, ex, e)
    return _replied(call, ex)


def _replied(call: Call, ex: _Exchange) -> ProxyResult:
    status = ex.status or 0
    if call.log:
        spawn(call.ctx, _after_reply(call, status, ex.body, ex.duration_ms), f"a2a-log:{call.target}")
    if b'"usage"' in ex.body:
        spawn(call.ctx, record_usage(call.ctx, call.target, ex.body), f"a2a-usage:{call.target}")
    result = ProxyResult(status, ex.body, outcome=Outcome.DELIVERED, method=call.method)
    if status >= 300:
        result.error = {"error": _agent_error(ex.body, status)}
    return result


def _agent_error(body: bytes, status: int) -> str:
    try:
        top = json.loads(body) if body else None
    except (ValueError, RecursionError):  # an agent's reply: nesting depth unbounded
        top = None
    if isinstance(top, dict) and isinstance(top.get("error"), str):
        return str(top["error"])
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _read_failed(call: Call, ex: _Exchange, exc: BaseException) -> ProxyResult:
    status = ex.status or 0
    confirmed = 200 <= status < 400
    log.warning("a2a: reading the reply of %s failed (status=%s): %r", call.target, status, exc)
    if call.log and confirmed:
        spawn(call.ctx, _after_reply(call, status, b"", ex.duration_ms), f"a2a-log:{call.target}")
    body = {"error": msg.READ_FAILED, "delivery_confirmed": confirmed}
    return _fail(502, body, Outcome.DELIVERED)


def _busy_error(exc: BaseException) -> bool:
    """Reset or EOF before any reply: the agent dropped the request unprocessed (spec 04 §1.6).

    A refused or unresolvable connect (`ClientConnectorError`) is not busy: nothing is listening."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionResetError):
        return True
    text = str(exc)
    return "EOF" in text or "connection reset" in text.lower()


def _failure_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:500]


async def _transport_failed(call: Call, ex: _Exchange, exc: BaseException) -> ProxyResult:
    log.info("a2a: dispatch to %s failed: %r", call.target, exc)
    idle = isinstance(exc, IdleTimeout)
    busy = not idle and _busy_error(exc)
    dead = await _container_dead(call)
    quiet_busy = (
        busy and not dead and (call.from_queue or not has_capability(call.ctx, call.target, "session"))
    )
    if call.log and not quiet_busy:
        spawn(call.ctx, _after_failure(call, _failure_text(exc), ex.duration_ms), f"a2a-log:{call.target}")
    if dead:
        body = {"error": msg.RESTARTING, "restarting": True}
        return _fail(503, body, Outcome.UNKNOWN if idle else Outcome.NOT_DELIVERED)
    if idle:
        return _fail(504, {"error": msg.IDLE_TIMEOUT, "timeout": True}, Outcome.UNKNOWN)
    if busy:
        return await _busy(call)
    return _fail(502, {"error": msg.UNREACHABLE}, Outcome.NOT_DELIVERED)


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
    if changed:
        _restart(ctx, call.target, "restart")
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
        return _fail(503, body, Outcome.BUSY, retry)
    busy_body = {"error": msg.BUSY_RETRY, "busy": True, "retry_after": msg.BUSY_RETRY_AFTER}
    if call.from_queue:
        return _fail(503, busy_body, Outcome.BUSY, retry)
    try:
        async with ctx.engine.begin() as conn:
            queue_id = await store.enqueue(
                conn,
                ws_id=call.target,
                caller_id=call.caller or None,
                body=call.request,
                method=call.method or None,
                key=_message_id(call.request) or None,
                now=utcnow(),
            )
        queue_hint(ctx).touch(call.target)
    except Exception:
        log.exception("a2a: enqueue for busy %s failed", call.target)
        if call.log:
            spawn(call.ctx, _after_failure(call, "enqueue failed", 0), f"a2a-log:{call.target}")
        return _fail(503, busy_body, Outcome.BUSY, retry)
    return await _queued_reply(call, queue_id)


async def _queued_reply(call: Call, queue_id: str) -> ProxyResult:
    depth = 0
    try:
        async with call.ctx.autocommit.connect() as conn:
            depth = await store.queue_depth(conn, call.target)
    except Exception:
        log.exception("a2a: queue depth of %s unavailable", call.target)
    body = {"queued": True, "queue_id": queue_id, "queue_depth": depth, "message": msg.BUSY_QUEUED}
    return ProxyResult(202, _encode(sorted_keys(body)), outcome=Outcome.QUEUED, method=call.method)


# ---- target cache: the workspace row for TTL seconds, dropped on any lifecycle event ----


class TargetCache:
    """Spares the database a read per call. Budget and URL are at most TTL seconds stale; status
    changes (removed, hibernated, offline, ...) come with a WORKSPACE_* event and drop the entry.

    Calls that miss together share one query (`load`): with 50 calls in flight to one agent, every
    expiry would otherwise send 50 identical reads at once."""

    TTL = 2.0
    QUIET = frozenset({"WORKSPACE_HEARTBEAT"})

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Any, float]] = {}
        self._loading: dict[str, asyncio.Task[Any]] = {}

    def get(self, ws_id: str) -> Any | None:
        hit = self._rows.get(ws_id)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, ws_id: str, row: Any) -> None:
        if len(self._rows) > 50_000:
            self._rows.clear()
        self._rows[ws_id] = (row, time.monotonic() + self.TTL)

    async def load(self, ws_id: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """The row from `fetch`, shared with every other caller that asks before it returns."""
        pending = self._loading.get(ws_id)
        if pending is None:
            # unsupervised: one read shared by the concurrent requests awaiting it, not background work
            pending = self._loading[ws_id] = asyncio.ensure_future(self._fetch(ws_id, fetch))
        return await asyncio.shield(pending)  # a caller that gives up does not cancel the others' query

    async def _fetch(self, ws_id: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        me = asyncio.current_task()
        try:
            row = await fetch()
        finally:
            current = self._loading.get(ws_id) is me
            if current:
                del self._loading[ws_id]
        if current and row is not None:  # not current: a WORKSPACE_* event came meanwhile, row may be stale
            self.put(ws_id, row)
        return row

    def drop(self, ws_id: str) -> None:
        self._rows.pop(ws_id, None)
        self._loading.pop(ws_id, None)  # later callers query again rather than join a read from before

    def on_event(self, event: Event) -> None:
        if event.event.startswith("WORKSPACE_") and event.event not in self.QUIET:
            self.drop(event.workspace_id or "")


def target_cache(ctx: AppContext) -> TargetCache:
    return ctx.a2a.target_cache


# ---- queue hint: skip the drain's DB round trips while a workspace's queue is known to be empty ----


class QueueHint:
    """Per process: when each workspace's queue was last seen empty, and which got items since.

    Another replica's enqueue is not seen here, so an "empty" verdict is trusted for RECHECK seconds
    only; after that the next heartbeat looks at the database again (and reclaims expired leases).
    A look that began before an enqueue in this process does not count (`mark`/`seen_empty(since=)`):
    taken after the enqueue, its "empty" would hide the new item, delaying its drain, or letting a resent
    message skip the duplicate check and be delivered twice.
    """

    RECHECK = 5.0
    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._empty_at: dict[str, float] = {}
        self._touched: dict[str, int] = {}
        self._seq = 0
        self._cleared = 0  # `_seq` when `_touched` was last cleared: older marks cannot be checked

    def mark(self) -> int:
        """Taken before looking at the queue; pass it to `seen_empty`."""
        return self._seq

    def touch(self, ws_id: str) -> None:
        self._empty_at.pop(ws_id, None)
        self._seq += 1
        if len(self._touched) > self.MAX_KEYS:
            self._touched.clear()
            self._cleared = self._seq
        self._touched[ws_id] = self._seq

    def seen_empty(self, ws_id: str, since: int) -> None:
        if since < self._cleared or self._touched.get(ws_id, 0) > since:
            return
        if len(self._empty_at) > self.MAX_KEYS:
            self._empty_at.clear()
        self._empty_at[ws_id] = time.monotonic()

    def probably_empty(self, ws_id: str) -> bool:
        at = self._empty_at.get(ws_id)
        return at is not None and time.monotonic() - at < self.RECHECK


def queue_hint(ctx: AppContext) -> QueueHint:
    return ctx.a2a.queue_hint


# ---- side effects (spec 04 §1.8), run in the background ----


def _tool_trace(reply: Any) -> Any:
    result = reply.get("result") if isinstance(reply, dict) else None
    meta = result.get("metadata") if isinstance(result, dict) else None
    return meta.get("tool_trace") if isinstance(meta, dict) else None


def _row(call: Call, **values: Any) -> dict[str, Any]:
    """An `a2a_receive` row on the target (every key present: rows are inserted together)."""
    row: dict[str, Any] = {
        "workspace_id": call.target,
        "activity_type": "a2a_receive",
        "source_id": call.caller or None,
        "target_id": call.target,
        "method": call.method,
        "summary": None,
        "request_body": call.request,
        "response_body": None,
        "tool_trace": None,
        "duration_ms": None,
        "status": "ok",
        "error_detail": None,
    }
    row.update(values)
    return row


async def _after_reply(call: Call, status: int, body: bytes, duration_ms: int) -> None:
    ctx = call.ctx
    try:
        reply = json.loads(body) if body else None
    except (ValueError, RecursionError):  # an agent's reply: nesting depth unbounded
        reply = None
    row = _row(
        call,
        summary=f"{call.method} → {call.target_name}",
        response_body=reply,
        tool_trace=_tool_trace(reply),
        duration_ms=duration_ms,
        status="ok" if status < 400 else "error",
    )
    stamp = call.caller if call.is_workspace_caller and status < 400 else None
    writer(ctx).add(row, outbound_caller=stamp)
    if not call.caller and status < 400:
        payload = {"response_body": reply, "method": call.method, "duration_ms": duration_ms}
        await ctx.events.broadcast("A2A_RESPONSE", call.target, sorted_keys(payload))


async def _after_failure(call: Call, error: str, duration_ms: int) -> None:
    row = _row(
        call,
        summary=f"A2A request to {call.target_name} failed: {error}",
        duration_ms=duration_ms,
        status="error",
        error_detail=error,
    )
    writer(call.ctx).add(row)


# ---- token usage (spec 01 §3) ----

MAX_TOKENS = 10_000_000
INPUT_COST, OUTPUT_COST = 3e-6, 15e-6  # USD per token


def parse_usage(body: bytes) -> tuple[int, int]:
    """`result.usage`, else top-level `usage`: (input_tokens, output_tokens); (0, 0) when absent."""
    try:
        top = json.loads(body)
    except (ValueError, RecursionError):  # an agent's reply: nesting depth unbounded
        return 0, 0
    if not isinstance(top, dict):
        return 0, 0
    for holder in (top.get("result"), top):
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if isinstance(usage, dict):
            inp, out = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
            if inp or out:
                return inp, out
    return 0, 0


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return min(max(int(value), 0), MAX_TOKENS)


def usage_period(now: datetime) -> datetime:
    """Token usage is kept per UTC day: the day's 00:00Z."""
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


async def record_usage(ctx: AppContext, ws_id: str, body: bytes) -> None:
    inp, out = parse_usage(body)
    if not inp and not out:
        return
    period = usage_period(utcnow())
    cost = inp * INPUT_COST + out * OUTPUT_COST
    async with ctx.engine.begin() as conn:
        await store.upsert_token_usage(conn, ws_id, period, inp, out, cost)


async def usage_today(ctx: AppContext, ws_id: str) -> dict[str, Any]:
    """GET /workspaces/:id/metrics (spec 01, spec 05 §9): today's UTC token usage of `ws_id`."""
    start = usage_period(utcnow())
    try:
        async with ctx.engine.connect() as conn:
            if not await workspace_exists(conn, ws_id, include_removed=False):
                raise ApiError(404, msg.NOT_FOUND)
            row = await store.token_usage(conn, ws_id, start)
    except ApiError:
        raise
    except Exception:
        log.exception("a2a: reading token usage of %s failed", ws_id)
        raise ApiError(500, "failed to query metrics") from None
    return {
        "input_tokens": int(row.input_tokens) if row else 0,
        "output_tokens": int(row.output_tokens) if row else 0,
        "total_calls": int(row.call_count) if row else 0,
        "estimated_cost_usd": f"{float(row.estimated_cost_usd) if row else 0.0:.6f}",
        "period_start": rfc3339(start),
        "period_end": rfc3339(start + timedelta(days=1)),
    }
