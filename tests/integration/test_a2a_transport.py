"""The A2A proxy's outbound transport (`a2a/transport.py`, built by `a2a/pool.py a2a_client`) against agents
that misbehave on the wire: what each real failure is classified as, and what the caller of
POST /workspaces/:id/a2a gets (the client's own framings and limits: test_a2a_client.py).

Covered elsewhere (tests/integration/test_a2a_proxy.py): refused connect → 502 unreachable with a failure row,
a body cut short after the headers → 502 `delivery_confirmed`, the idle timeout → 504 and nothing resent,
a dead container → 503; (test_a2a_queue.py) an EOF before any reply → 202 queued and delivered once.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from tests.conftest import ClientFactory, free_port
from tests.integration.a2a_support import StubAgent, message, queue_rows
from tests.integration.registry_support import add_workspace, ctx_of
from tests.integration.stub_http import StubHandler, StubServer
from workspace_server.a2a import pool
from workspace_server.a2a.forward import _busy_error, _failure_text
from workspace_server.a2a.pool import MAX_RESPONSE_BYTES, a2a_client, close_client
from workspace_server.a2a.transport import AgentClient, ConnectTimeout, Disconnected, Reply
from workspace_server.config import Settings
from workspace_server.context import AppContext

BUSY_MESSAGE = "workspace agent busy — request queued, will dispatch when capacity available"


class RawAgent:
    """An "agent" on a bare asyncio socket in the test's loop, misbehaving as `mode` says:
    - "answer": replies 200 with `reply` (and records the raw request);
    - "close": closes the connection as soon as it is accepted, before reading anything;
    - "read_close": reads the whole request, closes without a byte of reply (EOF);
    - "reset": reads the whole request, then aborts the connection (RST);
    - "partial_head": reads the request, sends half a status line and headers, closes;
    - "partial_body": reads the request, sends a status line and a body shorter than its Content-Length;
    - "hang": reads the request and never answers; `hung_up` is set when the client closes its side.
    """

    def __init__(self, mode: str, reply: bytes = b"{}") -> None:
        self.mode = mode
        self.reply = reply
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.hung_up = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> RawAgent:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.mode == "close":
            writer.close()
            return
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            self.requests.append((head, await reader.readexactly(length)))
            if self.mode == "answer":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(self.reply), self.reply)
                )
                await writer.drain()
            elif self.mode == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
            elif self.mode == "read_close":
                writer.close()
            elif self.mode == "partial_head":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
                await writer.drain()
                writer.close()
            elif self.mode == "partial_body":
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"jsonrpc":"2.0"')
                await writer.drain()
                writer.close()
            elif self.mode == "hang":
                if await reader.read(1) == b"":
                    self.hung_up.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass


class FullBacklog:
    """A listening port whose accept queue is full: a connect to it neither succeeds nor is refused."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.fillers: list[socket.socket] = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(self.listener.getsockname())
            self.fillers.append(s)

    def close(self) -> None:
        for s in [*self.fillers, self.listener]:
            s.close()


@pytest.fixture
async def http() -> AsyncIterator[AgentClient]:
    """The proxy's own client, built by `a2a_client` from the module's settings (patch them first)."""
    # open bootstrap mode: the egress policy lets these loopback listeners be dialed
    ctx = cast(
        AppContext,
        SimpleNamespace(a2a=SimpleNamespace(client=None, trusted_client=None), settings=Settings()),
    )
    yield a2a_client(ctx)
    await close_client(ctx)


async def _fail(http: AgentClient, url: str) -> Exception:
    ex = Reply()
    with pytest.raises(Exception) as info:
        await http.post(url, b'{"jsonrpc":"2.0"}', ex)
    assert ex.status is None  # failed before any reply
    return cast(Exception, info.value)


# ---- real transport failures and their classification ----


@pytest.mark.parametrize(
    ("mode", "busy"),
    [
        ("refused", False),
        ("dns", False),
        ("close", True),
        ("read_close", True),
        ("reset", True),
        ("partial_head", True),
    ],
)
async def test_failure_before_reply_is_classified(http: AgentClient, mode: str, busy: bool) -> None:
    if mode == "refused":
        exc = await _fail(http, f"http://127.0.0.1:{free_port()}/")
    elif mode == "dns":
        exc = await _fail(http, "http://agent.invalid/")  # RFC 6761: never resolves
    else:
        async with RawAgent(mode) as agent:
            exc = await _fail(http, agent.url)
    assert _busy_error(exc) is busy
    assert _failure_text(exc).startswith(type(exc).__name__)


async def test_body_cut_short_fails_after_the_status(http: AgentClient) -> None:
    """The status is known before the body is read, so a cut body is a read failure of a 200 reply (the
    caller gets `delivery_confirmed`), never a failure before any reply."""
    ex = Reply()
    async with RawAgent("partial_body") as agent:
        with pytest.raises(Disconnected):
            await http.post(agent.url, b"{}", ex)
    assert ex.status == 200


async def test_connect_timeout_is_not_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "SOCK_CONNECT_TIMEOUT", 0.3)
    ctx = cast(
        AppContext,
        SimpleNamespace(a2a=SimpleNamespace(client=None, trusted_client=None), settings=Settings()),
    )
    backlog = FullBacklog()
    try:
        exc = await _fail(a2a_client(ctx), backlog.url)
    finally:
        backlog.close()
        await close_client(ctx)
    assert isinstance(exc, ConnectTimeout)
    assert not _busy_error(exc)


async def test_pool_timeout_is_not_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """All MAX_CONNECTIONS in flight: the wait for one is bounded, and running out is not "busy"."""
    monkeypatch.setattr(pool, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(pool, "CONNECT_TIMEOUT", 0.3)
    ctx = cast(
        AppContext,
        SimpleNamespace(a2a=SimpleNamespace(client=None, trusted_client=None), settings=Settings()),
    )
    http = a2a_client(ctx)
    async with RawAgent("hang") as agent:
        first = asyncio.create_task(http.post(agent.url, b"{}", Reply()))
        while not agent.requests:
            await asyncio.sleep(0.01)
        exc = await _fail(http, agent.url)
        first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await close_client(ctx)
    assert isinstance(exc, ConnectTimeout)
    assert not _busy_error(exc)


# ---- what the caller of POST /workspaces/:id/a2a gets ----


async def dev_client(client_factory: ClientFactory, **overrides: Any) -> httpx.AsyncClient:
    return await client_factory(MOLECULE_ENV="development", **overrides)


@pytest.mark.parametrize("mode", ["close", "reset", "partial_head"])
async def test_reset_or_eof_before_reply_is_queued(client_factory: ClientFactory, mode: str) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    async with RawAgent(mode) as agent:
        target = await add_workspace(ctx, "t", status="online", url=agent.url)
        r = await client.post(f"/workspaces/{target}/a2a", json=message("x", f"m-{mode}"))
    assert r.status_code == 202
    assert r.json()["queued"] is True and r.json()["message"] == BUSY_MESSAGE
    (item,) = await queue_rows(ctx, target)
    assert item.idempotency_key == f"m-{mode}"


async def test_request_and_reply_bytes_are_unchanged(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    envelope = {
        "jsonrpc": "2.0",
        "id": "r1",
        "method": "message/send",
        "params": {
            "message": {"role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "é ✓"}]}
        },
    }
    sent = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    reply = b'{"jsonrpc":"2.0", "id":"r1",\n "result":{"text":"\\u00e9 \xe2\x9c\x93"}}'
    async with RawAgent("answer", reply) as agent:
        target = await add_workspace(ctx_of(client), "t", status="online", url=agent.url)
        r = await client.post(
            f"/workspaces/{target}/a2a", content=sent, headers={"Content-Type": "application/json"}
        )
    assert (r.status_code, r.content) == (200, reply)
    ((head, body),) = agent.requests
    assert body == sent
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "post / http/1.1"
    assert "content-type: application/json" in lines
    assert f"content-length: {len(sent)}" in lines


async def call_stub_agent(client_factory: ClientFactory, handler: type[StubHandler]) -> httpx.Response:
    """One message through the proxy to a workspace whose agent is a stub server running `handler`."""
    agent = StubServer(handler)
    try:
        client = await dev_client(client_factory)
        target = await add_workspace(ctx_of(client), "t", status="online", url=agent.url)
        return await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    finally:
        agent.close()


async def test_redirect_is_passed_through_not_followed(client_factory: ClientFactory) -> None:
    hits: list[str] = []

    class Elsewhere(StubHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.respond(200, b"{}")

    elsewhere = StubServer(Elsewhere)

    class Redirecting(StubHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.respond(302, b"", headers={"Location": f"{elsewhere.url}/moved"})

    try:
        r = await call_stub_agent(client_factory, Redirecting)
    finally:
        elsewhere.close()
    assert (r.status_code, r.json()) == (302, {"error": "Found"})
    assert hits == []


async def test_cookies_are_not_carried_between_agents(client_factory: ClientFactory) -> None:
    """Agents may share a host name (ports apart, or paths on one external host) and cookies do not isolate
    by port: a cookie one agent sets must never reach another (or come back to it). By name: the default
    jar already ignores cookies from IP addresses."""
    seen: list[str | None] = []

    class Setting(StubHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Cookie"))
            self.respond(200, b"{}", headers={"Set-Cookie": "session=secret; Path=/"})

    class Other(StubHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Cookie"))
            self.respond(200, b"{}")

    first, second = StubServer(Setting), StubServer(Other)
    try:
        client = await dev_client(client_factory)
        by_name = [s.url.replace("127.0.0.1", "localhost") for s in (first, second)]
        a = await add_workspace(ctx_of(client), "a", status="online", url=by_name[0])
        b = await add_workspace(ctx_of(client), "b", status="online", url=by_name[1])
        for target in (a, b, a):
            assert (await client.post(f"/workspaces/{target}/a2a", json=message("x"))).status_code == 200
    finally:
        first.close()
        second.close()
    assert seen == [None, None, None]


async def test_compressed_reply_is_decoded(client_factory: ClientFactory) -> None:
    plain = b'{"jsonrpc":"2.0","id":"1","result":{"kind":"message","parts":[]}}'

    class Gzipping(StubHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.respond(200, gzip.compress(plain), headers={"Content-Encoding": "gzip"})

    r = await call_stub_agent(client_factory, Gzipping)
    assert (r.status_code, r.content) == (200, plain)


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


async def test_reply_over_the_limit_is_a_read_failure(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client = await dev_client(client_factory)
    target = await add_workspace(ctx_of(client), "t", status="online", url=agent.url)
    agent.mode, agent.status, agent.body = "status", 200, b" " * (MAX_RESPONSE_BYTES + 1)
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (
        502,
        {"delivery_confirmed": True, "error": "failed to read agent response"},
    )


async def test_unbuildable_url_is_500(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    ctx.provisioner = object()  # our backend's URL form is trusted: no SSRF parse before the client
    target = await add_workspace(ctx, "t", status="online", url="http://127.0.0.1:99999")
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (500, {"error": "failed to create proxy request"})
    assert await queue_rows(ctx) == []


async def test_ceiling_closes_the_agent_connection(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    async with RawAgent("hang") as agent:
        target = await add_workspace(ctx, "t", status="online", url=agent.url)
        r = await client.post(f"/workspaces/{target}/a2a", json=message("x"), headers={"X-Timeout": "1"})
        assert r.status_code == 504
        assert r.json() == {"error": r.json()["error"], "timeout": True}
        await asyncio.wait_for(agent.hung_up.wait(), 3)  # the agent's connection is closed, not abandoned
    assert await queue_rows(ctx) == []


async def test_idle_cancel_closes_the_agent_connection(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory, A2A_IDLE_TIMEOUT_SECONDS=1)
    async with RawAgent("hang") as agent:
        target = await add_workspace(ctx_of(client), "t", status="online", url=agent.url)
        r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))  # canvas: no ceiling
        assert r.status_code == 504
        await asyncio.wait_for(agent.hung_up.wait(), 3)
