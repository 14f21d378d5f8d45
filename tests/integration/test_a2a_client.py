"""The A2A proxy's own HTTP/1.1 client (`a2a/transport.py`) on real sockets: reply framings, connection
reuse and limits, and the replies it refuses. How its failures are classified for delivery, and what a
caller of the proxy then gets, is in test_a2a_transport.py."""

from __future__ import annotations

import asyncio
import base64
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from workspace_server.a2a.transport import (
    MAX_HEAD_BYTES,
    AgentClient,
    BadReply,
    ConnectFailed,
    Disconnected,
    InvalidURL,
    Reply,
    ReplyTooLarge,
    target_of,
)
from workspace_server.egress.policy import EgressPolicy

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Agent:
    """A listener on 127.0.0.1 running `script` on each connection; counts connections and requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Agent:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        lines = head.lower().split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length"))
        return await reader.readexactly(length)


def answering(*replies: bytes, then_close: bool = False) -> Callable[[Agent], Script]:
    """A script that reads a request and writes the next of `replies`, for as long as requests come."""

    def make(agent: Agent) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for reply in replies:
                await agent.read_request(reader)
                writer.write(reply)
                await writer.drain()
                if then_close:
                    return
            await reader.read()  # keep the connection until the client closes it

        return script

    return make


async def serve(make: Callable[[Agent], Script]) -> Agent:
    agent = Agent(lambda r, w: asyncio.sleep(0))
    agent.script = make(agent)
    return await agent.__aenter__()


def client(**overrides: float | int | EgressPolicy | None) -> AgentClient:
    options: dict[str, float | int] = {
        "max_connections": 100,
        "keepalive": 5.0,
        "connect_timeout": 5.0,
        "sock_connect_timeout": 5.0,
        "max_body": 1 << 20,
    }
    policy = overrides.pop("policy", None)
    options.update({k: v for k, v in overrides.items() if isinstance(v, int | float)})
    return AgentClient(policy if isinstance(policy, EgressPolicy) else None, **options)  # type: ignore[arg-type]


@pytest.fixture
async def http() -> AsyncIterator[AgentClient]:
    c = client()
    yield c
    await c.close()


async def post(http: AgentClient, url: str, body: bytes = b'{"jsonrpc":"2.0"}') -> Reply:
    reply = Reply()
    await http.post(url, body, reply)
    return reply


def ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


# ---- framings ----


async def test_keep_alive_reuses_one_connection(http: AgentClient) -> None:
    agent = await serve(answering(ok(b'{"n":1}'), ok(b'{"n":2}'), ok(b'{"n":3}')))
    try:
        bodies = [(await post(http, agent.url)).body for _ in range(3)]
    finally:
        await agent.__aexit__()
    assert bodies == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert agent.connections == 1


async def test_request_head_and_body_on_the_wire(http: AgentClient) -> None:
    agent = await serve(answering(ok(b"{}")))
    try:
        await post(http, agent.url + "/a2a/x?y=1", b'{"k":"\xc3\xa9"}')
    finally:
        await agent.__aexit__()
    lines = agent.heads[0].decode().split("\r\n")
    assert lines[0] == "POST /a2a/x?y=1 HTTP/1.1"
    assert f"Host: {agent.url.removeprefix('http://')}" in lines
    assert "Content-Type: application/json" in lines and "Content-Length: 10" in lines


async def test_credentials_in_the_url_become_basic_auth(http: AgentClient) -> None:
    agent = await serve(answering(ok(b"{}")))
    try:
        await post(http, agent.url.replace("http://", "http://user:p%40ss@"))
    finally:
        await agent.__aexit__()
    token = base64.b64encode(b"user:p@ss").decode()
    assert f"Authorization: Basic {token}" in agent.heads[0].decode().split("\r\n")


async def test_chunked_reply(http: AgentClient) -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n":1}\n\r\n0\r\n\r\n'
    agent = await serve(answering(chunked, ok(b"{}")))
    try:
        first, second = await post(http, agent.url), await post(http, agent.url)
    finally:
        await agent.__aexit__()
    assert (first.status, first.body, second.body) == (200, b'{"a":1}\n', b"{}")
    assert agent.connections == 1


async def test_reply_ended_by_the_connection_close(http: AgentClient) -> None:
    agent = await serve(answering(b'HTTP/1.0 200 OK\r\n\r\n{"old":true}', then_close=True))
    try:
        reply = await post(http, agent.url)
        again = await post(http, agent.url)  # a new connection: that one was not kept
    finally:
        await agent.__aexit__()
    assert (reply.status, reply.body, again.body) == (200, b'{"old":true}', b'{"old":true}')
    assert agent.connections == 2


async def test_connection_close_reply_is_not_reused(http: AgentClient) -> None:
    agent = await serve(answering(ok(b"{}", b"Connection: close"), then_close=False))
    try:
        await post(http, agent.url)
        await post(http, agent.url)
    finally:
        await agent.__aexit__()
    assert agent.connections == 2


async def test_interim_reply_is_skipped(http: AgentClient) -> None:
    agent = await serve(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"final":1}')))
    try:
        reply = await post(http, agent.url)
    finally:
        await agent.__aexit__()
    assert (reply.status, reply.body) == (200, b'{"final":1}')


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_replies_are_decoded(http: AgentClient, encoding: str) -> None:
    plain = b'{"result":"' + b"x" * 5000 + b'"}'
    if encoding == "gzip":
        packed = gzip.compress(plain)
    elif encoding == "deflate":
        packed = zlib.compress(plain)
    else:
        squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = squeeze.compress(plain) + squeeze.flush()
    name = encoding.removeprefix("raw-").encode()
    agent = await serve(answering(ok(packed, b"Content-Encoding: " + name)))
    try:
        reply = await post(http, agent.url)
    finally:
        await agent.__aexit__()
    assert reply.body == plain


# ---- limits and refusals ----


async def test_compressed_bomb_is_too_large() -> None:
    bomb = gzip.compress(b"\0" * (8 << 20))  # ~8 KB on the wire
    http = client(max_body=1 << 20)
    agent = await serve(answering(ok(bomb, b"Content-Encoding: gzip")))
    reply = Reply()
    try:
        with pytest.raises(ReplyTooLarge):
            await http.post(agent.url, b"{}", reply)
    finally:
        await agent.__aexit__()
        await http.close()
    assert reply.status == 200  # the head was in: a read failure of a delivered call


async def test_body_past_the_limit_is_too_large() -> None:
    http = client(max_body=1000)
    agent = await serve(answering(ok(b" " * 1001)))
    try:
        with pytest.raises(ReplyTooLarge):
            await post(http, agent.url)
    finally:
        await agent.__aexit__()
        await http.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * (MAX_HEAD_BYTES + 10),
        b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 300 + b"\r\n",
    ],
    ids=["not-http", "head-too-large", "too-many-fields"],
)
async def test_what_is_not_a_reply_is_refused(http: AgentClient, reply: bytes) -> None:
    agent = await serve(answering(reply))
    result = Reply()
    try:
        with pytest.raises(BadReply):
            await http.post(agent.url, b"{}", result)
    finally:
        await agent.__aexit__()
    assert result.status is None


async def test_two_replies_to_one_request_drop_the_connection(http: AgentClient) -> None:
    agent = await serve(answering(ok(b'{"a":1}') + ok(b'{"b":2}'), ok(b'{"c":3}')))
    try:
        first = await post(http, agent.url)
        second = await post(http, agent.url)
    finally:
        await agent.__aexit__()
    assert (first.body, second.body) == (b'{"a":1}', b'{"a":1}')  # the second from a fresh connection
    assert agent.connections == 2


async def test_agent_closing_an_idle_connection_is_not_a_failure(http: AgentClient) -> None:
    agent = await serve(answering(ok(b"{}"), then_close=True))
    try:
        await post(http, agent.url)
        await asyncio.sleep(0.05)  # the agent's close reaches the idle connection
        reply = await post(http, agent.url)
    finally:
        await agent.__aexit__()
    assert reply.status == 200 and agent.connections == 2


async def test_idle_connections_are_closed_after_keepalive() -> None:
    http = client(keepalive=0.2)
    closed = asyncio.Event()

    def make(agent: Agent) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await agent.read_request(reader)
            writer.write(ok(b"{}"))
            if await reader.read() == b"":
                closed.set()

        return script

    agent = await serve(make)
    try:
        await post(http, agent.url)
        await asyncio.wait_for(closed.wait(), 3)
    finally:
        await agent.__aexit__()
        await http.close()


async def test_an_idle_connection_makes_room_at_the_limit() -> None:
    http = client(max_connections=1)
    first, second = await serve(answering(ok(b'{"a":1}'))), await serve(answering(ok(b'{"b":1}')))
    try:
        a = await post(http, first.url)
        b = await asyncio.wait_for(post(http, second.url), 3)  # the idle one to `first` is closed for it
    finally:
        await first.__aexit__()
        await second.__aexit__()
        await http.close()
    assert (a.body, b.body) == (b'{"a":1}', b'{"b":1}')


def never_answering(hung_up: asyncio.Event) -> Callable[[Agent], Script]:
    """An agent that reads the request, never answers, and sets `hung_up` when the client closes."""

    def make(agent: Agent) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await agent.read_request(reader)
            if await reader.read() == b"":
                hung_up.set()

        return script

    return make


async def cancel_hangs_up(http: AgentClient, agent: Agent, hung_up: asyncio.Event) -> None:
    """A call cancelled while the agent holds it closes its connection (the agent sees EOF)."""
    call = asyncio.create_task(post(http, agent.url))
    while not agent.heads:
        await asyncio.sleep(0.01)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await asyncio.wait_for(hung_up.wait(), 3)


async def test_cancel_closes_the_connection(http: AgentClient) -> None:
    hung_up = asyncio.Event()
    agent = await serve(never_answering(hung_up))
    try:
        await cancel_hangs_up(http, agent, hung_up)
    finally:
        await agent.__aexit__()


async def test_reset_mid_body_after_the_status(http: AgentClient) -> None:
    def make(agent: Agent) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await agent.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
            await writer.drain()
            writer.transport.abort()

        return script

    agent = await serve(make)
    reply = Reply()
    try:
        with pytest.raises(Disconnected):
            await http.post(agent.url, b"{}", reply)
    finally:
        await agent.__aexit__()
    assert reply.status == 200


@pytest.mark.parametrize(
    "url", ["ftp://agent/x", "http://", "http://agent:99999/", "unix:///tmp/agent.sock", "http://a b/"]
)
def test_unbuildable_urls(url: str) -> None:
    with pytest.raises(InvalidURL):
        target_of(url)


async def test_egress_policy_refuses_at_connect_time() -> None:
    """A production policy refuses loopback: nothing is dialed, and the cause is the policy's refusal."""
    from workspace_server.config import Settings
    from workspace_server.egress import policy_for
    from workspace_server.egress.clients import refused_cause

    policy = policy_for(Settings(ADMIN_TOKEN="x", MOLECULE_ENV="production"))
    http = client(policy=policy)
    agent = await serve(answering(ok(b"{}")))
    try:
        with pytest.raises(ConnectFailed) as info:
            await post(http, agent.url.replace("127.0.0.1", "localhost"))
    finally:
        await agent.__aexit__()
        await http.close()
    assert refused_cause(info.value) is not None
    assert agent.connections == 0


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for `localhost` (and 127.0.0.1), self-signed: (cert, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "agent.pem", tmp / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_https_agent_is_verified(tmp_path: Path) -> None:
    """TLS with the name checked: an agent whose certificate is not trusted is not reached; once its issuer
    is trusted, the same agent answers over one kept connection."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    agent = Agent(lambda r, w: asyncio.sleep(0))
    agent.script = answering(ok(b'{"tls":1}'), ok(b'{"tls":2}'))(agent)
    agent.server = await asyncio.start_server(agent._handle, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://localhost:{agent.server.sockets[0].getsockname()[1]}/"
    untrusting, trusting = client(), client()
    trusted = ssl.create_default_context(cafile=str(cert))
    trusting._ssl = trusted
    try:
        with pytest.raises(ConnectFailed):
            await post(untrusting, url)
        bodies = [(await post(trusting, url)).body for _ in range(2)]
    finally:
        await agent.__aexit__()
        await untrusting.close()
        await trusting.close()
    assert bodies == [b'{"tls":1}', b'{"tls":2}']


def test_the_client_on_uvloop() -> None:
    """The server runs on uvloop, whose transports are not asyncio's classes: reuse, framings, a cancel and
    the egress refusal there too (the tests above run on the default loop)."""
    import uvloop

    async def scenario() -> None:
        http = client()
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        agent = await serve(answering(ok(b'{"a":1}'), chunked, ok(b'{"c":3}')))
        hung_up = asyncio.Event()
        hang = await serve(never_answering(hung_up))
        try:
            bodies = [(await post(http, agent.url)).body for _ in range(3)]
            assert bodies == [b'{"a":1}', b"{}", b'{"c":3}'] and agent.connections == 1
            await cancel_hangs_up(http, hang, hung_up)
        finally:
            await agent.__aexit__()
            await hang.__aexit__()
            await http.close()
        await test_egress_policy_refuses_at_connect_time()

    uvloop.run(scenario())
