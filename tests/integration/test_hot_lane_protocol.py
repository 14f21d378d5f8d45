"""The hot lane below ASGI (serving.py `_answer_hot`): the server's own protocol answers a hot route with
the hot shell's answer in one write, skipping uvicorn's send and the app's entry.

Over a real socket it must answer exactly as the layered middleware stack does (the matrix of
test_hot_shell_equivalence.py, both apps served by `serve`'s own configuration), and keep the HTTP rules
uvicorn keeps for every other route: keep-alive and pipelining, `Connection: close`, HTTP/1.0,
`Expect: 100-continue`, its header checks. A small body of declared length is handed to the lane whole
once the parser has it all (`_WholeBody`); any other is read through uvicorn's `receive`: both kinds, mixed
on one connection, a body arriving in pieces and a client gone half-way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from tests.conftest import LiveServer
from tests.integration.test_hot_shell_equivalence import (
    SETTINGS,
    Seen,
    ask_matrix,
    assert_same_answers,
    build,
)
from tests.integration.test_http_limits import Responses
from tests.integration.test_http_shell_routes import samples
from workspace_server.common.routing import HotRoute
from workspace_server.config import Settings
from workspace_server.middleware import install_middleware
from workspace_server.middleware.hot_shell import HotShell
from workspace_server.observability.metrics import render

PROD = Settings(RATE_LIMIT="1000", MAX_BODY_BYTES="4096")  # type: ignore[arg-type]


@pytest.fixture
def served() -> Iterator[list[LiveServer]]:
    servers: list[LiveServer] = []
    yield servers
    for srv in servers:
        srv.stop()


def serve(servers: list[LiveServer], settings: Settings, app: FastAPI) -> LiveServer:
    srv = LiveServer(settings, app=app).start()
    servers.append(srv)
    return srv


@pytest.fixture
def no_asgi_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any hot request the server's protocol did not answer itself (it would go through the lane's
    ASGI entry, `HotShell.__call__`)."""

    async def asgi_entry(self: HotShell, *_: Any) -> None:
        raise AssertionError("a hot route went through ASGI")

    monkeypatch.setattr(HotShell, "__call__", asgi_entry)


@pytest.mark.usefixtures("no_asgi_lane")
@pytest.mark.parametrize("env", SETTINGS)
async def test_over_a_socket_the_hot_lane_answers_as_the_layered_stack(
    env: dict[str, str], served: list[LiveServer]
) -> None:
    settings = Settings(**env)  # type: ignore[arg-type]
    hot = serve(served, settings, build(settings, hot=True))
    layered = serve(served, settings, build(settings, hot=False))
    answers: list[list[Seen]] = [[], []]
    for srv, out in zip((hot, layered), answers, strict=True):
        # a connection per request: the layered app's unhandled error closes its connection after the 500
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=srv.url, limits=fresh) as client:
            out += await ask_matrix(client)
    assert_same_answers(*answers)


def _post(body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST /hot/1 HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def _split(answer: bytes) -> tuple[bytes, bytes]:
    """(the head, lowercased; the body) of one whole answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.lower(), body


def _closed(sock: socket.socket, responses: Responses) -> bool:
    """Whether the server closed the connection after the answers read, with nothing more sent."""
    try:
        return responses.buf == b"" and sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _pipelined(port: int) -> list[tuple[bytes, bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_post(b"a" * 10) + _post(b"b" * 20) + _post(b"c" * 30))
        responses = Responses(sock)
        return [_split(responses.next()) for _ in range(3)]


@pytest.mark.usefixtures("no_asgi_lane")
async def test_keep_alive_and_pipelined_hot_requests_are_answered_whole_and_in_order(
    served: list[LiveServer],
) -> None:
    srv = serve(served, PROD, build(PROD, hot=True))
    got = await asyncio.to_thread(_pipelined, srv.port)
    assert [body for _, body in got] == [b'{"len":10}', b'{"len":20}', b'{"len":30}']
    assert all(head.startswith(b"http/1.1 200 ok") and b"connection: close" not in head for head, _ in got)


def _one(port: int, request: bytes) -> tuple[bytes, bytes, bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        responses = Responses(sock)
        head, body = _split(responses.next())
        return head, body, _closed(sock, responses)


@pytest.mark.usefixtures("no_asgi_lane")
@pytest.mark.parametrize(
    ("extra", "version"), [("Connection: close\r\n", "1.1"), ("", "1.0")], ids=["close", "http-1.0"]
)
async def test_a_hot_answer_closes_when_the_client_asks_or_speaks_http_1_0(
    served: list[LiveServer], extra: str, version: str
) -> None:
    srv = serve(served, PROD, build(PROD, hot=True))
    head, body, closed = await asyncio.to_thread(_one, srv.port, _post(b"xyz", extra, version))
    assert head.startswith(b"http/1.1 200 ok") and body == b'{"len":3}'
    assert b"\r\nconnection: close" in head
    assert closed


def _expect_continue(port: int) -> tuple[bytes, tuple[bytes, bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_post(b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 5"))
        interim = sock.recv(25)  # the body is sent only once the server asked for it
        sock.sendall(b"hello")
        return interim, _split(Responses(sock).next())


@pytest.mark.usefixtures("no_asgi_lane")
async def test_a_hot_route_asks_for_an_expected_body(served: list[LiveServer]) -> None:
    srv = serve(served, PROD, build(PROD, hot=True))
    interim, (head, body) = await asyncio.to_thread(_expect_continue, srv.port)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert head.startswith(b"http/1.1 200 ok") and body == b'{"len":5}'


def _chunked(body: bytes) -> bytes:
    head = b"POST /hot/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def _mixed(port: int) -> list[tuple[bytes, bytes]]:
    """Pipelined on one connection: a whole body, a chunked one, an empty one, one past the parser's
    high-water mark (read through `receive`), a whole one again."""
    requests = [_post(b"a" * 10), _chunked(b"b" * 20), _post(b""), _post(b"c" * 70_000), _post(b"d" * 40)]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        responses = Responses(sock)
        return [_split(responses.next()) for _ in requests]


@pytest.mark.usefixtures("no_asgi_lane")
async def test_whole_and_streamed_hot_bodies_mixed_on_one_connection(served: list[LiveServer]) -> None:
    settings = Settings(RATE_LIMIT="1000", MAX_BODY_BYTES="100000")  # type: ignore[arg-type]
    srv = serve(served, settings, build(settings, hot=True))
    got = await asyncio.to_thread(_mixed, srv.port)
    assert [body for _, body in got] == [
        b'{"len":10}',
        b'{"len":20}',
        b'{"len":0}',
        b'{"len":70000}',
        b'{"len":40}',
    ]
    assert all(head.startswith(b"http/1.1 200 ok") for head, _ in got)


def _in_pieces(port: int, request: bytes, pieces: int) -> tuple[bytes, bytes]:
    step = -(-len(request) // pieces)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(request), step):
            sock.sendall(request[i : i + step])
            time.sleep(0.02)  # each piece its own read on the server
        return _split(Responses(sock).next())


@pytest.mark.usefixtures("no_asgi_lane")
async def test_a_body_arriving_in_pieces_is_answered_once_whole(served: list[LiveServer]) -> None:
    srv = serve(served, PROD, build(PROD, hot=True))
    head, body = await asyncio.to_thread(_in_pieces, srv.port, _post(b"z" * 3000), 6)
    assert head.startswith(b"http/1.1 200 ok") and body == b'{"len":3000}'


def _hang_up(port: int, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        time.sleep(0.1)  # the head read and the route entered before the client goes


@pytest.mark.usefixtures("no_asgi_lane")
@pytest.mark.parametrize(
    "request_bytes",
    [_post(b"q" * 100)[:-90], _chunked(b"q" * 100)[:-20]],
    ids=["declared-length", "chunked"],
)
async def test_a_client_gone_half_way_through_its_body_is_counted_and_logged(
    served: list[LiveServer], caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    """Nobody reads the answer, but the metrics count the request (a 400) and one info line says why."""
    app = build(PROD, hot=True)
    srv = serve(served, PROD, app)
    caplog.set_level(logging.INFO, logger="workspace_server.common.errors")
    await asyncio.to_thread(_hang_up, srv.port, request_bytes)
    counted = 'molecule_http_requests_total{method="POST",path="/hot/:id",status="400"}'
    for _ in range(100):
        if samples(render(app.state.metrics_registry).decode()).get(counted) == 1:
            break
        await asyncio.sleep(0.05)
    assert samples(render(app.state.metrics_registry).decode()).get(counted) == 1
    assert "client went away before sending the whole body: POST /hot/1" in caplog.text


async def smuggler(request: Request, body: bytes) -> Response:
    return Response(b"x", headers={"x-note": "a\r\nset-cookie: session=attacker"})


@pytest.mark.usefixtures("no_asgi_lane")
async def test_a_hot_answer_with_a_header_uvicorn_refuses_is_a_500(
    served: list[LiveServer], capfd: pytest.CaptureFixture[str]
) -> None:
    app = FastAPI()
    route = HotRoute("/bad/{id}", smuggler, methods=["POST"])
    app.router.routes.append(route)
    install_middleware(app, PROD, [route])
    srv = serve(served, PROD, app)
    async with httpx.AsyncClient(base_url=srv.url) as client:
        r = await client.post("/bad/1")
        assert r.status_code == 500
        assert "set-cookie" not in r.headers and "x-note" not in r.headers
        assert (await client.post("/bad/1")).status_code == 500  # the server goes on serving
    logged = capfd.readouterr().err  # uvicorn's error log (its own handler, not the root logger)
    assert "Exception in ASGI application" in logged and "Invalid HTTP header" in logged
