"""The server's bounds on a request head and on WebSocket messages (issue 11 §3), over a real socket.

Before serving.py a 1 MiB header was answered 200 and a client sending its head a byte at a time held
its connection for ever.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import pytest
from fastapi import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import LiveServer
from tests.integration.replica_support import seed
from tests.integration.test_activity_journal import SlowAgent

LiveFactory = Callable[..., LiveServer]


def _exchange(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send `payload` (ignoring a reset once the server has answered and closed) and read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read_to_eof(sock)


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as the close)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _get(path: str = "/health", headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n".encode()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


async def test_a_1_mib_header_is_refused(live_server_factory: LiveFactory) -> None:
    srv = live_server_factory()
    big = await asyncio.to_thread(_exchange, srv.port, _get(headers=f"X-Big: {'a' * (1 << 20)}\r\n"))
    assert _status(big) == 431, big[:200]
    assert big.endswith(b'{"error":"request header fields too large"}')
    # a large but reasonable head still passes, and so does a body bigger than the head cap
    ok = await asyncio.to_thread(_exchange, srv.port, _get(headers=f"X-Big: {'a' * 32_000}\r\n"))
    assert _status(ok) == 200, ok[:200]
    body = b'{"name": "' + b"x" * 500_000 + b'"}'
    post = (
        f"POST /workspaces HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answer = await asyncio.to_thread(_exchange, srv.port, post)
    assert _status(answer) == 400, answer[:200]  # the app's own answer (name too long), not a head refusal


async def test_too_many_headers_and_a_long_url_are_refused(live_server_factory: LiveFactory) -> None:
    srv = live_server_factory(MAX_HEADER_COUNT=20)
    many = "".join(f"X-H{i}: v\r\n" for i in range(30))
    answer = await asyncio.to_thread(_exchange, srv.port, _get(headers=many))
    assert _status(answer) == 431 and b"too many request header fields" in answer, answer[:200]
    answer = await asyncio.to_thread(_exchange, srv.port, _get("/health?q=" + "a" * 9000))
    assert _status(answer) == 414, answer[:200]
    fine = "".join(f"X-H{i}: v\r\n" for i in range(10))
    assert _status(await asyncio.to_thread(_exchange, srv.port, _get(headers=fine))) == 200


def _slow_head(port: int, pause: float) -> tuple[bytes, float]:
    """Half a head, a pause, the rest: (the answer, seconds until the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(pause)
        try:
            sock.sendall(b"X-Late: 1\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = _read_to_eof(sock)
        return data, time.monotonic() - start


async def test_a_slow_head_times_out(live_server_factory: LiveFactory) -> None:
    srv = live_server_factory(HEADER_TIMEOUT_SECONDS=0.5)
    answer, took = await asyncio.to_thread(_slow_head, srv.port, 2.0)
    assert _status(answer) == 408, answer[:200]
    assert took < 5
    assert b"/health" not in answer and b'"status"' not in answer
    # an idle connection that never sends a byte is closed too
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5
    # a head sent in time is served
    answer, _ = await asyncio.to_thread(_slow_head, srv.port, 0.05)
    assert _status(answer) == 200, answer[:200]


async def test_websocket_messages_over_the_cap_close_the_socket(live_server_factory: LiveFactory) -> None:
    srv = live_server_factory(WS_MAX_MESSAGE_BYTES=64 * 1024)

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.send_text(await ws.receive_text())

    srv.app.add_api_websocket_route("/limits-echo", echo)
    url = srv.url.replace("http://", "ws://") + "/limits-echo"
    async with connect(url, max_size=None) as ws:
        await ws.send("a" * 1000)
        assert await ws.recv() == "a" * 1000
        await ws.send("b" * (128 * 1024))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def _stalled_body(port: int) -> tuple[bytes, float]:
    head = (
        "POST /workspaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b'{"name": "sl')
        data = _read_to_eof(sock)
        return data, time.monotonic() - started


async def test_a_stalled_body_is_cut_off(
    live_server_factory: LiveFactory, caplog: pytest.LogCaptureFixture
) -> None:
    srv = live_server_factory(BODY_IDLE_TIMEOUT_SECONDS=0.5)
    caplog.set_level(logging.INFO)
    caplog.clear()  # the start-up warnings (open bootstrap mode, a generated key) are not this test's
    answer, took = await asyncio.to_thread(_stalled_body, srv.port)
    assert answer == b"" and took < 5  # closed, not held for ever
    deadline = time.monotonic() + 5
    while "went away" not in caplog.text and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "request body stalled" in caplog.text and "went away" in caplog.text, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # a body that keeps coming, slowly, is read to the end
    body = b'{"name": "slow but steady"}'
    head = (
        f"POST /workspaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()

    def trickle() -> bytes:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as sock:
            sock.sendall(head)
            for i in range(0, len(body), 9):
                time.sleep(0.3)
                sock.sendall(body[i : i + 9])
            return sock.recv(65536)

    assert _status(await asyncio.to_thread(trickle)) == 201


class Responses:
    """Reads whole responses (content-length bodies) off a keep-alive socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "server closed the connection"
        self.buf += chunk

    def next(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        fields = (line.partition(b": ") for line in head.split(b"\r\n")[1:])
        length = next(int(value) for name, _, value in fields if name == b"content-length")
        while len(rest) < length:
            self._fill()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


def _keep_alive_exchange(port: int) -> list[bytes]:
    get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        responses = Responses(sock)
        got = []
        for _ in range(3):
            sock.sendall(get)
            got.append(responses.next())
        sock.sendall(get * 3)  # pipelined: answered in order, each whole
        got.extend(responses.next() for _ in range(3))
        assert responses.buf == b""
        return got


async def test_keep_alive_and_pipelined_responses_are_whole_and_in_order(
    live_server_factory: LiveFactory,
) -> None:
    """serving.CoalescedWrites holds a response's head for its body: keep-alive and pipelined requests
    still get whole answers, in order (the write count: tests/unit/test_coalesced_writes.py)."""
    srv = live_server_factory()
    got = await asyncio.to_thread(_keep_alive_exchange, srv.port)
    assert len(got) == 6
    assert all(_status(answer) == 200 and answer.endswith(b"}") for answer in got), got


def _idle_close(port: int, requests: int, gap: float) -> tuple[list[int], float]:
    """`requests` keep-alive GETs `gap` seconds apart, then wait for the server to close: (statuses,
    seconds from the last answer to the close; the socket's 10 s timeout fails the test otherwise)."""
    get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        responses = Responses(sock)
        statuses = []
        for i in range(requests):
            if i:
                time.sleep(gap)
            sock.sendall(get)
            statuses.append(_status(responses.next()))
        answered = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server (a timeout raises instead)
        return statuses, time.monotonic() - answered


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout_not_before(
    live_server_factory: LiveFactory,
) -> None:
    """The keep-alive timeout is kept by the connection's watchdog, not a timer per request: a connection
    used more often than the timeout stays open (four requests 0.6 s apart with a 1 s timeout), and once
    idle it is closed, never sooner than the timeout after its last answer."""
    srv = live_server_factory(KEEP_ALIVE_TIMEOUT_SECONDS="1")
    statuses, idle = await asyncio.to_thread(_idle_close, srv.port, 4, 0.6)
    assert statuses == [200] * 4
    assert idle >= 1.0


def _slow_call_then_another(port: int, path: str) -> list[int]:
    """A keep-alive A2A call the agent answers after 2.5 s, then a GET on the same connection."""
    body = b'{"jsonrpc":"2.0","id":"slow","method":"message/send","params":{"message":{"parts":[]}}}'
    post = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        responses = Responses(sock)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the connection has been idle once
        statuses = [_status(responses.next())]
        sock.sendall(post)
        statuses.append(_status(responses.next()))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        statuses.append(_status(responses.next()))
        return statuses


async def test_a_request_longer_than_the_keep_alive_timeout_keeps_its_connection(
    live_server_factory: LiveFactory, db_url: str
) -> None:
    """The keep-alive timeout counts idle time only: a call the app works on for 2.5 s (a slow agent) on a
    connection with a 1 s timeout is answered, and the connection serves the next request."""
    agent = SlowAgent(delay=2.5)
    try:
        srv = live_server_factory(KEEP_ALIVE_TIMEOUT_SECONDS="1", MOLECULE_ENV="development")
        ws_id, _ = await seed(db_url, url=agent.url.replace("127.0.0.1", "localhost"))
        statuses = await asyncio.to_thread(_slow_call_then_another, srv.port, f"/workspaces/{ws_id}/a2a")
        assert statuses == [200, 200, 200]
    finally:
        agent.close()


async def test_responses_name_no_server_software(live_server_factory: LiveFactory) -> None:
    """As the reference (Go net/http) answers: a Date header, no Server header naming the stack."""
    srv = live_server_factory()
    answer = await asyncio.to_thread(_exchange, srv.port, _get())
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n")[1:]]
    assert _status(answer) == 200
    assert b"date" in names
    assert b"server" not in names, head
