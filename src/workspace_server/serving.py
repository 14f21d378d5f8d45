"""The HTTP server's own bounds on a request: head size, header count, URL length, time to send the head,
and how long a body may stall.

uvicorn runs httptools (llhttp), which has no cap of its own: it buffers a header value whole before
the application sees it, so a 16 MiB header cost 16 MiB of server memory per connection, and a client
that sends its head one byte at a time held a connection for ever (uvicorn's keep-alive timeout only
runs between requests). h11 has a cap (`h11_max_incomplete_event_size`) but is a pure-Python parser,
several times slower on the agents' hot routes (bench/README.md), so the caps are added here around
httptools instead (docs/decisions.md, "Input bounds").

A head over a cap is answered before the application runs and the connection is closed:
431 (head bytes or header count), 414 (request target), 408 (head not complete in time; an idle new
connection is simply closed). The body is the app's usual `{"error": …}`. A body that stalls (no byte
for `body_idle_timeout` while the server is ready to read) closes the connection: the handler sees the
client go away (one info line, common/errors.client_gone_response).

The keep-alive timeout is the same per-connection watchdog's as well: uvicorn arms a timer after every
response and cancels it on the next request, which cost every request a TimerHandle made and cancelled
(~2–4 µs, the hot routes included). An idle connection is closed when the watchdog next looks, which it
does at least every `timeout_keep_alive` seconds: between one and two keep-alive timeouts after its last
response (never sooner than uvicorn did, so a client reusing it within the timeout is never cut off).

A request for a hot route (common/routing.py: the heartbeat, the A2A proxy) is answered below ASGI: the
protocol enters the app's hot lane itself and writes the hot shell's whole answer in one send, instead of
running uvicorn's ASGI send and the app's entry (FastAPI, Starlette, the lane's ASGI wrapper). uvicorn's
request cycle stays: its parser callbacks, pipelining and shutdown are unchanged; `_send_answer` repeats its
send's rules for a whole response. A small body of declared length (every agent's request) is handed to the
lane whole, once the parser has it all (`_WholeBody`); any other (streamed, large, `Expect: 100-continue`)
is read through the cycle's `receive`, as any ASGI app reads it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools
from starlette.types import Receive, Scope
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from workspace_server.common.routing import Answer, Body, HotLane, Lane

log = logging.getLogger(__name__)

# Header lines `name: value\r\n` whose names and values pass uvicorn's own checks (HEADER_RE, HEADER_VALUE_RE:
# a name without separators, spaces or controls, a value without controls but tab), tested in one pass: no
# name can hold the ": " that ends it, no value a lone CR or LF (the same byte classes: the unit test in
# tests/unit/test_coalesced_writes.py compares them with uvicorn's for every byte).
_VALID_FIELDS = re.compile(rb'(?:[^\x00-\x1f\x7f()<>@,;:\[\]={} \t\\"]*: [^\x00-\x08\x0a-\x1f\x7f]*\r\n)*')


def valid_fields(block: bytes, fields: int) -> bool:
    """Whether `block`, `fields` header lines, holds exactly those lines and each passes uvicorn's checks. A
    value holding a whole CRLF line passes the pattern (as two lines) but not the count."""
    return block.count(b"\r\n") == fields and _VALID_FIELDS.fullmatch(block) is not None


FIELD_LINES_MAX = 1024
FIELD_LINE_MAX_BYTES = 256  # longer lines are checked each time, never remembered


class FieldLines:
    """Response header fields as the lines uvicorn writes (`name: value\r\n`, the name lower-cased), each
    checked as uvicorn checks it, and remembered: a hot route's answers repeat nearly all their fields (the
    security headers, the content type and length, the date within its second), so a field is rendered and
    checked once, not per response. Bounded: only short lines are remembered, and the memory is cleared when
    full, so values that never repeat (a rate limit's remaining count) cannot grow it."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: dict[tuple[bytes, bytes], bytes] = {}

    def render(self, fields: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, int | None, bool]:
        """(the lines, the first content-length, whether a `connection` field says close). Raises
        RuntimeError on a field uvicorn would refuse."""
        lines = self._lines
        out: list[bytes] = []
        length: int | None = None
        closing = False
        for name, value in fields:
            try:
                line = lines.get((name, value))
            except TypeError:  # a bytearray: not remembered
                line = None
            if line is None:
                line = _field_line(name, value)
                if type(name) is bytes and type(value) is bytes and len(line) <= FIELD_LINE_MAX_BYTES:
                    if len(lines) >= FIELD_LINES_MAX:
                        lines.clear()
                    lines[(name, value)] = line
            if line[0] == 99:  # b"c": the two fields uvicorn's send acts on
                if length is None and line.startswith(b"content-length: "):
                    length = int(line[16:-2])
                elif line.startswith(b"connection: "):
                    closing = closing or b"close" in [t.lower().strip() for t in line[12:-2].split(b",")]
            out.append(line)
        return b"".join(out), length, closing


def _field_line(name: bytes, value: bytes) -> bytes:
    line = b"".join((bytes(name).lower(), b": ", bytes(value), b"\r\n"))
    if not valid_fields(line, 1):  # as uvicorn checks each name and value
        raise RuntimeError("Invalid HTTP header name or value.")
    return line


@dataclass(frozen=True)
class HeadLimits:
    max_head_bytes: int  # request line + all header lines
    max_headers: int
    max_url_bytes: int
    head_timeout: float  # seconds from a connection (or a request's first byte) to the end of its head
    body_idle_timeout: float = 0.0  # seconds a request body may go without a byte; <= 0: no limit


class _Refuse(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


COALESCE_MAX_BYTES = 64 * 1024


def whole_body_length(scope: Scope) -> int | None:
    """The declared length of a body the protocol may collect whole for the hot lane: a `content-length`,
    no `transfer-encoding`, no `expect` (100-continue waits for the app to read), at most uvicorn's read
    high-water mark (past it the parser's callbacks pause reading until `receive` resumes it). None: the
    lane reads the body through `receive`."""
    length = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name in (b"transfer-encoding", b"expect"):
            return None
    return length if length is not None and length <= HIGH_WATER_LIMIT else None


async def _gone() -> dict[str, str]:
    """`receive` for a client gone before its body was whole: what uvicorn's tells the app then."""
    return {"type": "http.disconnect"}


class _WholeBody:
    """Stands in for a hot request's `cycle.message_event`, which uvicorn's protocol sets after each body
    chunk, at the end of the message and when the client goes: it starts the lane's answer once the body
    is whole (or the client gone), and only once. Nothing waits on it: nothing calls the cycle's
    `receive`."""

    __slots__ = ("_cycle", "_start", "_started")

    def __init__(self, cycle: RequestResponseCycle, start: Any) -> None:
        self._cycle = cycle
        self._start = start
        self._started = False

    def set(self) -> None:
        cycle = self._cycle
        if self._started or (cycle.more_body and not cycle.disconnected):
            return
        self._started = True
        self._start(bytes(cycle.body) if not cycle.disconnected else _gone)


class CoalescedWrites:
    """A response's writes (uvicorn writes its head, then its body) leave the server in one send.

    The first write is held until the next one or until the event loop's current step ends, whichever
    comes first; the second goes out with it at once. So a response sent in one step (every plain
    response) is one syscall and one wake-up of the reader instead of two (a tenth of a heartbeat's CPU,
    the server's and its client's: bench/README.md), and a streamed one is never held past the step that
    wrote it. Only uvicorn's request cycle writes through it; the protocol sends what is held before it
    writes or closes anything itself (a refusal, a parse error, a stalled body) and when a response
    completes, so bytes never change order and none is left behind. Anything else is the transport's.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        elif len(data) > COALESCE_MAX_BYTES:  # a large body is not copied to save one send
            self._held = None
            self._transport.write(held)
            self._transport.write(data)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


FIELD_LINES = FieldLines()  # one for the server: every connection answers alike


def bounded_httptools(limits: HeadLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits` applied (pass as `uvicorn.Config(http=...)`)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _limits = limits

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._in_body = False
            self._head_bytes = 0
            self._refused = False
            # One watchdog per connection (not a timer per request: the hot routes pay a few attribute
            # writes per request, not TimerHandles): it checks the head deadline, the body's last byte
            # and the keep-alive idle time, and re-arms itself for the next moment one could expire.
            self._watchdog: asyncio.TimerHandle | None = None
            self._head_started = 0.0
            self._last_data = 0.0
            self._idle_from: float | None = None  # when the last response ended with nothing after it

        # ---- connection ----
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._writes = CoalescedWrites(transport, self.loop)
            self._head_started = self._last_data = self.loop.time()
            self._arm(self._period())
            lane = getattr(getattr(self.app, "state", None), "hot_lane", None)
            self._hot_lane = lane if isinstance(lane, HotLane) and not self.access_log else None

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            """uvicorn's, plus the head caps. A chunk is counted as head while the parser has not reached
            the end of the head; a chunk in which a new head starts (keep-alive) is not counted, so a
            pipelined body tail is never mistaken for head bytes (it is bounded by the read size)."""
            if self._refused:
                return
            self._writes.flush()  # whatever the parser makes the protocol write goes after it
            self._idle_from = None
            was_in_head = self._in_head
            if self._in_body:
                self._last_data = self.loop.time()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._disarm()  # the WebSocket protocol owns the transport from here
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError as exc:
                refusal = exc.__context__
                if isinstance(refusal, _Refuse):
                    self._refuse(refusal.status, refusal.reason)
                    return
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
            if self._in_head and was_in_head:
                self._head_bytes += len(data)
                if self._head_bytes > self._limits.max_head_bytes:
                    self._refuse(431, "request header fields too large")

        # ---- parser callbacks ----
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0
            self._head_started = self.loop.time()

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > self._limits.max_url_bytes:
                raise _Refuse(414, "request URI too long")

        def on_headers_complete(self) -> None:
            # counted here, not per header (the head-bytes cap already bounds what they cost meanwhile)
            if len(self.headers) > self._limits.max_headers:
                raise _Refuse(431, "too many request header fields")
            self._in_head = False
            before = self.cycle
            super().on_headers_complete()
            if self.cycle is not before and self.cycle is not None:
                self.cycle.transport = self._writes  # type: ignore[assignment]
            if not (self.parser.should_upgrade() and self._should_upgrade()):
                self._in_body = True
                self._last_data = self.loop.time()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def on_response_complete(self) -> None:
            """uvicorn's, with the keep-alive timer left to the watchdog (`_watch`)."""
            self._writes.flush()  # a finished response is never held (a close or shutdown may follow)
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self.flow.resume_reading()
            if self.pipeline:  # a pipelined request waits for this one: start it
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._idle_from = self.loop.time()

        # ---- the hot lane, below ASGI ----
        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            """uvicorn's, except that a request for a hot route is answered by `_answer_hot` (pipelined
            ones too: they start here when their turn comes). `app is self.app`: not the 503 uvicorn
            substitutes past its connection cap."""
            lane = self._hot_lane
            scope = cast(Scope, cycle.scope)
            if lane is None or app is not self.app or not lane.direct(scope):
                super()._start_asgi_task(cycle, app)
                return
            if whole_body_length(scope) is None:
                self._start_hot(cycle, lane.lane, cast(Receive, cycle.receive))
                return
            # the body whole, when the parser has it (now, if this request waited in the pipeline)
            waiter = _WholeBody(cycle, lambda body: self._start_hot(cycle, lane.lane, body))
            cycle.message_event = waiter  # type: ignore[assignment]
            waiter.set()

        def _start_hot(self, cycle: RequestResponseCycle, lane: Lane, body: Body) -> None:
            context = contextvars.Context() if self.config.reset_contextvars else None
            # uvicorn starts a task per request; this one replaces it, kept in self.tasks as uvicorn's are
            # unsupervised: the request's own task (the server waits for self.tasks on shutdown)
            task = self.loop.create_task(self._answer_hot(cycle, lane, body), context=context)
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

        async def _answer_hot(self, cycle: RequestResponseCycle, lane: Lane, body: Body) -> None:
            """What `cycle.run_asgi(app)` does, for a hot route: the hot shell's answer to the body (whole, or
            read through the cycle's own `receive`: 100-continue, streaming, a client going away) written
            with one send instead of an ASGI start and body. Skips uvicorn's send and `receive`, and the
            app's entry (FastAPI, Starlette, the lane's ASGI wrapper): bench/README.md, sessions 10-11."""
            try:
                answer = await lane.respond(cast(Scope, cycle.scope), body)
                if self.flow.write_paused and not cycle.disconnected:
                    await self.flow.drain()
                self._send_answer(cycle, answer)
            except BaseException as exc:  # as run_asgi: logged, a 500 if nothing was sent yet
                self.logger.error("Exception in ASGI application\n", exc_info=exc)
                if not cycle.response_started:
                    await cycle.send_500_response()
                else:
                    self.transport.close()
            finally:
                cycle.on_response = lambda: None

        def _send_answer(self, cycle: RequestResponseCycle, answer: Answer) -> None:
            """`cycle.send` of the answer's start and (final) body, in one write: the same header checks,
            the same keep-alive rule (`connection: close` from either side), the cycle left complete."""
            if cycle.disconnected:
                return  # what uvicorn's send does for a client that is gone
            head, length, closing = FIELD_LINES.render((*cycle.default_headers, *answer.headers))
            keep_alive = cycle.keep_alive and not closing
            if length != len(answer.body):
                raise RuntimeError("a hot answer must declare its body's content-length")
            close = b"" if keep_alive or closing else b"connection: close\r\n"
            cycle.response_started = True
            self._writes.flush()
            self.transport.write(b"".join((STATUS_LINE[answer.status], head, close, b"\r\n", answer.body)))
            cycle.response_complete = True
            cycle.message_event.set()
            if not keep_alive:
                cycle.keep_alive = False
                self.transport.close()
            cycle.on_response()

        # ---- the watchdog ----
        def _period(self) -> float:
            limits = self._limits
            timeouts = (limits.head_timeout, limits.body_idle_timeout, float(self.timeout_keep_alive))
            enabled = [t for t in timeouts if t > 0]
            return min(enabled) if enabled else 0.0

        def _arm(self, delay: float) -> None:
            if delay > 0:
                self._watchdog = self.loop.call_later(delay, self._watch)

        def _disarm(self) -> None:
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None

        def _watch(self) -> None:
            self._watchdog = None
            if self._refused or self.transport.is_closing():
                return
            now = self.loop.time()
            head_timeout, body_timeout = self._limits.head_timeout, self._limits.body_idle_timeout
            if self._in_head and head_timeout > 0:
                left = self._head_started + head_timeout - now
                if left <= 0:
                    self._head_timed_out()
                    return
                self._arm(left)
                return
            if self._in_body and body_timeout > 0:
                if self.flow.read_paused:  # the server, not the client, is the slow one now
                    self._last_data = now
                left = self._last_data + body_timeout - now
                if left <= 0:
                    client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
                    log.info("%s: request body stalled for %.0f s; connection closed", client, body_timeout)
                    self._writes.close()
                    return
                self._arm(left)
                return
            idle_from, keep_alive = self._idle_from, self.timeout_keep_alive
            if idle_from is not None and keep_alive > 0 and now - idle_from >= keep_alive:
                self.transport.close()  # idle past the keep-alive timeout, as uvicorn's own timer closes it
                return
            self._arm(self._period())  # between requests, or the app is answering

        # ---- refusing ----
        def _head_timed_out(self) -> None:
            if self._head_bytes or self.__dict__.get("url") or self.headers:
                self._refuse(408, "request header timeout")
            else:  # nothing sent: an idle connection, closed without a word (as Go's ReadHeaderTimeout)
                self._refused = True
                self.transport.close()

        def _refuse(self, status: int, reason: str) -> None:
            self._writes.flush()
            self._refused = True
            self._disarm()
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            log.info("%s: %d %s", client, status, reason)
            body = json.dumps({"error": reason}, separators=(",", ":")).encode()
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "content-type: application/json; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            if not self.transport.is_closing():
                self.transport.write(head.encode("latin-1") + body)
                self.transport.close()

    return BoundedHttpToolsProtocol
