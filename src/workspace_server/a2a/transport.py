"""The A2A proxy's outbound HTTP/1.1 client: keep-alive connections to agents, one POST at a time on each.

Every agent-to-agent message goes out here, so what a call costs here is paid on every call. aiohttp's
client, used before, spent ~0.11 ms of CPU on each request (request and response objects, header
multidicts, timers, traces, cookie handling) — about a quarter of the server's CPU per proxied call, and
as much again as the whole pipeline's logic (bench/README.md). This client does only what the proxy needs
and parses replies with httptools (llhttp: the parser uvicorn serves our requests with), ~0.015 ms a call;
docs/decisions.md "The A2A transport" has the measurements and what it leaves out.

What a failure means is in its type, since delivery depends on it (forward.py):
- `ConnectFailed` (`ConnectTimeout`): nothing reached the agent — refused, unresolvable, timed out, no
  free connection in time, or an address the egress policy refuses (the `EgressRefused` is the cause);
- `Disconnected`: the connection closed or reset before the reply was complete;
- `BadReply`: what came back is not an HTTP reply, or its head is past the caps;
- `ReplyTooLarge`: the (decoded) body is past `max_body`;
- `InvalidURL`: no request can be built for the URL.
`Reply.status` is set as soon as the reply's head is in, so a caller can tell a failure before any reply
from one while reading it.

Agent-supplied URLs connect only to addresses the egress policy admits (`policy`: every answer of the
name is judged, the connection goes to a judged address, and the peer is checked once connected), as
the aiohttp connector did; a pooled connection is reused without a new check, as there.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools
import yarl

from workspace_server.egress.clients import checked_addresses
from workspace_server.egress.policy import EgressPolicy, EgressRefused

MAX_HEAD_BYTES = 64 << 10  # a reply head past this is not an agent's reply
MAX_HEADERS = 256
USER_AGENT = "workspace-server"
_AUTHORITY = re.compile(r"[A-Za-z0-9.\-_]+(:[0-9]+)?|\[[0-9A-Fa-f:.%A-Za-z]+\](:[0-9]+)?", re.ASCII)


class TransportError(Exception):
    """A call that got no (complete) reply."""


class InvalidURL(TransportError):
    pass


class ConnectFailed(TransportError):
    pass


class ConnectTimeout(ConnectFailed):
    pass


class Disconnected(TransportError):
    pass


class BadReply(TransportError):
    pass


class ReplyTooLarge(TransportError):
    pass


@dataclass(slots=True)
class Reply:
    """Filled in by `AgentClient.post`: the status once the head is in (with the time it took since
    `started`, a `time.perf_counter()`), the body once complete."""

    started: float = 0.0
    status: int | None = None
    duration_ms: int = 0
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL means for the wire: the pool it belongs to and the request head up to Content-Length."""

    key: tuple[str, str, int]  # scheme, host, port
    host: str  # to connect to (no brackets)
    port: int
    tls: bool
    head: bytes


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    """Agent URLs repeat: each is parsed and its head built once. InvalidURL when no request can be built."""
    try:
        parsed = yarl.URL(url)
        host, port = parsed.raw_host, parsed.port
    except (ValueError, TypeError) as e:  # e.g. a port out of range
        raise InvalidURL(f"{url!r}: {e}") from e
    if parsed.scheme not in ("http", "https") or not host or port is None:
        raise InvalidURL(f"{url!r}: not an http(s) URL with a host")
    authority = parsed.host_port_subcomponent or ""
    if not _AUTHORITY.fullmatch(authority):  # it goes into the Host header as it is
        raise InvalidURL(f"{url!r}: not a host name or address")
    lines = [
        f"POST {parsed.raw_path_qs or '/'} HTTP/1.1",
        f"Host: {authority}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
        "Accept-Encoding: gzip, deflate",
        "Content-Type: application/json",
    ]
    if parsed.raw_user is not None:  # credentials in the URL: Basic auth, as HTTP clients do
        pair = f"{parsed.user or ''}:{parsed.password or ''}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(pair).decode()}")
    head = "\r\n".join(lines).encode("latin-1", errors="strict") + b"\r\nContent-Length: "
    return Target((parsed.scheme, host, port), host, port, parsed.scheme == "https", head)


class _Decoder:
    """A gzip or deflate body, inflated with a bound on its output (a small body may inflate to gigabytes)."""

    def __init__(self, encoding: bytes) -> None:
        self.gzip = encoding in (b"gzip", b"x-gzip")
        self.inflate: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None

    def feed(self, data: bytes, room: int) -> bytes:
        if self.inflate is None:  # deflate: zlib-wrapped as the RFC says, or raw as some servers send
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self.inflate = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        try:
            out = self.inflate.decompress(data, room + 1)
        except zlib.error as e:
            raise BadReply(f"undecodable body: {e}") from None
        if len(out) > room or self.inflate.unconsumed_tail:
            raise ReplyTooLarge
        return out


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an agent; `exchange` sends a request and waits for its reply."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reply: Reply | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._head_bytes = 0
        self._headers = 0
        self._in_head = True
        self._chunks: list[bytes] = []
        self._size = 0
        self._encoding = b""
        self._decoder: _Decoder | None = None
        self._delimited = False  # the body's end is declared (Content-Length or chunked), not the EOF
        self._informational = False

    async def exchange(self, request: bytes, reply: Reply) -> None:
        assert self.transport is not None and self.waiter is None
        loop = asyncio.get_running_loop()
        self.reply, self.reusable = reply, False
        self.waiter = loop.create_future()
        self.transport.write(request)
        try:
            await self.waiter
        finally:
            self.waiter = self.reply = None

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: this connection cannot be trusted any more
            self.close()
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            cause = e.__context__
            self._fail(cause if isinstance(cause, TransportError) else BadReply(f"not an HTTP reply: {e}"))
        except TransportError as e:  # raised by a callback outside the parser's own error path
            self._fail(e)
        else:
            if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
                self._fail(BadReply("reply head too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        reply = self.reply
        if reply is not None and reply.status is not None and not self._in_head and not self._delimited:
            self._complete(keep_alive=False)  # a body that ends with the connection (no length given)
            return
        why = f"connection closed before the reply was complete ({exc or 'EOF'})"
        self._fail(Disconnected(why))

    # ---- httptools callbacks ----

    def on_message_begin(self) -> None:
        if self.waiter is None or self.waiter.done():
            raise BadReply("a second reply to one request")  # then nothing more here is trusted

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            raise BadReply("too many reply header fields")
        lowered = name.lower()
        if lowered == b"content-encoding":
            self._encoding = value.strip().lower()
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the reply follows
            self._informational = True
            return
        self._in_head = False
        reply = self.reply
        assert reply is not None
        reply.status = status
        reply.duration_ms = int((time.perf_counter() - reply.started) * 1000)
        if self._encoding in (b"gzip", b"x-gzip", b"deflate"):
            self._decoder = _Decoder(self._encoding)

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            body = self._decoder.feed(body, self.max_body - self._size)
        self._size += len(body)
        if self._size > self.max_body:
            raise ReplyTooLarge
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._reset()
            return
        self._complete(keep_alive=self.parser.should_keep_alive())

    # ----

    def _complete(self, keep_alive: bool) -> None:
        reply, waiter = self.reply, self.waiter
        assert reply is not None and waiter is not None
        reply.body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self.reusable = keep_alive and not self.closed
        self._reset()
        if not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: TransportError) -> None:
        self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class AgentClient:
    """Keep-alive connections per (scheme, host, port), at most `max_connections` open in all.

    `policy`: the egress policy new connections are checked against; None for URLs this server's backend
    assigned (loopback, container names), which are dialed as they are. A connection idle for
    `keepalive` seconds is closed. Waiting for a free connection and connecting share `connect_timeout`;
    the TCP (and TLS) connect alone is bounded by `sock_connect_timeout`.
    """

    def __init__(
        self,
        policy: EgressPolicy | None,
        *,
        max_connections: int,
        keepalive: float,
        connect_timeout: float,
        sock_connect_timeout: float,
        max_body: int,
    ) -> None:
        self.policy = policy
        self.max_connections = max_connections
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.sock_connect_timeout = sock_connect_timeout
        self.max_body = max_body
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._opening = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def post(self, url: str, body: bytes, reply: Reply) -> None:
        """POST `body` (JSON) to `url`; fills `reply`. Cancelling it closes the connection."""
        target = target_of(url)
        conn = self._take_idle(target.key) or await self._open(target)
        self._busy.add(conn)
        try:
            await conn.exchange(target.head + b"%d\r\n\r\n" % len(body) + body, reply)
        except BaseException:
            conn.close()
            raise
        finally:
            self._busy.discard(conn)
            if conn.reusable and not self._closed:
                self._put_idle(target.key, conn)
            else:
                conn.close()
                self._slot_freed()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("client closed"))

    # ---- the pool ----

    def _count(self) -> int:
        return sum(len(c) for c in self._idle.values()) + len(self._busy) + self._opening

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to be closed by the agent
            if not conn.closed and (conn.transport is None or not conn.transport.is_closing()):
                return conn
            conn.close()
            self._slot_freed()
        return None

    def _put_idle(self, key: tuple[str, str, int], conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(key, []).append(conn)
        if self._slot_waiters:  # someone waits for a slot: free one rather than keep this idle
            self._evict_idle()
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for `keepalive` seconds; re-arm while any are left."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest_kept = loop.time() - self.keepalive
        for key in list(self._idle):
            kept = []
            for conn in self._idle[key]:
                if conn.idle_since <= oldest_kept or conn.closed:
                    conn.close()
                    self._slot_freed()
                else:
                    kept.append(conn)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if self._idle and not self._closed:
            first = min(c.idle_since for conns in self._idle.values() for c in conns)
            self._sweeper = loop.call_later(max(first + self.keepalive - loop.time(), 0.05), self._sweep)

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection of any agent to make room; False when none is idle."""
        oldest: tuple[float, tuple[str, str, int]] | None = None
        for key, conns in self._idle.items():
            if conns and (oldest is None or conns[0].idle_since < oldest[0]):
                oldest = (conns[0].idle_since, key)
        if oldest is None:
            return False
        conns = self._idle[oldest[1]]
        conns.pop(0).close()
        if not conns:
            del self._idle[oldest[1]]
        self._slot_freed()
        return True

    def _slot_freed(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _open(self, target: Target) -> _Connection:
        if self._closed:
            raise ConnectFailed("client closed")
        try:
            async with asyncio.timeout(self.connect_timeout):
                while self._count() >= self.max_connections and not self._evict_idle():
                    waiter = asyncio.get_running_loop().create_future()
                    self._slot_waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                            self._slot_freed()  # the slot we were handed goes to the next in line
                        raise
                self._opening += 1
                try:
                    return await self._connect(target)
                finally:
                    self._opening -= 1
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {target.host}:{target.port} in time") from None

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls() if target.tls else None
        if self.policy is None:
            addresses = [target.host]
        else:
            try:
                addresses = await checked_addresses(self.policy, target.host, target.port)
            except EgressRefused as e:
                raise ConnectFailed(str(e)) from e
            except OSError as e:
                raise ConnectFailed(f"cannot resolve {target.host}: {e}") from e
        factory: Callable[[], _Connection] = functools.partial(_Connection, self.max_body)
        last: BaseException | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self.sock_connect_timeout):
                    transport, conn = await loop.create_connection(
                        factory, address, target.port, ssl=tls, server_hostname=target.host if tls else None
                    )
            except TimeoutError:
                raise ConnectTimeout(f"connect to {target.host}:{target.port} timed out") from None
            except (OSError, ssl.SSLError) as e:
                last = e
                continue
            if self.policy is not None:
                self._check_peer(transport, target, conn)
            return conn
        raise ConnectFailed(f"cannot connect to {target.host}:{target.port}: {last}") from last

    def _check_peer(self, transport: asyncio.BaseTransport, target: Target, conn: _Connection) -> None:
        assert self.policy is not None
        peer = transport.get_extra_info("peername")
        try:
            self.policy.check_ip(str(peer[0]) if peer else "", target.host, target.port)
        except EgressRefused as e:
            conn.close()
            raise ConnectFailed(str(e)) from e

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl
