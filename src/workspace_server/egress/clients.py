"""The policy at connect time, through the HTTP libraries' own extension points.

- the A2A proxy's own client (a2a/transport.py): `checked_addresses` judges every answer of a name, and
  the client connects only to those addresses and checks the peer once connected. Only a new connection
  is checked: a pooled one costs nothing. The proxy also judges IP-literal URLs before the call
  (`EgressPolicy.check_static`) to answer with the spec's error without trying.
- aiohttp (Slack): `GuardedResolver` wraps the default resolver and refuses a name whose answers
  include an address the policy refuses; and the connector's `socket_factory` (called by aiohttp for every
  connect attempt, with the address it is about to connect to, IP literals included: they skip resolvers)
  refuses once more. Both run only when a new connection is opened (the connector's DNS cache holds what
  the resolver returned), so a pooled connection costs nothing.
- httpx (transcript, traces, session checks): `GuardedBackend` is an httpcore network backend. It resolves
  the host itself, judges every answer, connects to the address it judged (so a second DNS answer cannot
  differ from the first), and checks the connected socket's peer address once more.

All raise `EgressRefused` (an OSError), which the clients report as a failed connect; callers map it to
their spec error strings.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import typing

import aiohttp
import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from workspace_server.egress.policy import DNS_TIMEOUT, EgressPolicy, EgressRefused, ip_literal

log = logging.getLogger(__name__)


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if not results:
            raise EgressRefused(f"{host}: no addresses")
        for r in results:
            self.policy.check_ip(str(r["host"]), host, port or None)
        return results

    async def close(self) -> None:
        await self.inner.close()


REFUSED = "address refused by the egress policy"  # one text: aiohttp keeps the type of identical errors


def checked_socket_factory(policy: EgressPolicy) -> typing.Callable[[typing.Any], socket.socket]:
    """aiohttp's `socket_factory`: the last word on the address a connection is about to be made to."""

    def make(addr_info: typing.Any) -> socket.socket:
        family, type_, proto, _canon, sockaddr = addr_info
        try:
            policy.check_ip(str(sockaddr[0]), port=int(sockaddr[1]))
        except EgressRefused as exc:
            log.warning("egress: connect refused: %s", exc)
            raise EgressRefused(REFUSED) from None
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def guarded_connector(policy: EgressPolicy, **kwargs: typing.Any) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(policy), socket_factory=checked_socket_factory(policy), **kwargs
    )


def refused_cause(exc: BaseException | None) -> EgressRefused | None:
    """The EgressRefused behind a library's connect error (aiohttp's `os_error`, httpx's `__cause__`)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, EgressRefused):
            return exc
        nxt = getattr(exc, "os_error", None)
        exc = nxt if isinstance(nxt, BaseException) else (exc.__cause__ or exc.__context__)
        seen += 1
    return None


async def checked_addresses(policy: EgressPolicy, host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, each judged by the policy (EgressRefused when any is refused, or
    none came back; OSError when it does not resolve). An IP literal is judged as it is."""
    literal = ip_literal(host)
    if literal is not None:
        policy.check_ip(literal, host, port)
        return [host]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=DNS_TIMEOUT
        )
    except (UnicodeError, TimeoutError) as exc:
        raise OSError(f"cannot resolve {host}") from exc
    addrs: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        policy.check_ip(addr, host, port)
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise EgressRefused(f"{host}: no addresses")
    return addrs


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addrs = await checked_addresses(self.policy, host, port)
        except EgressRefused as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        last: Exception | None = None
        for addr in addrs:
            try:
                stream = await self.inner.connect_tcp(
                    addr, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            peer = stream.get_extra_info("server_addr")
            try:
                self.policy.check_ip(str(peer[0]) if peer else "", host, port)
            except EgressRefused as exc:
                await stream.aclose()
                raise httpcore.ConnectError(str(exc)) from exc
            return stream
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not dialed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose every new connection goes through `GuardedBackend`.

    No proxy (an environment proxy would resolve names where the policy cannot see them)."""

    def __init__(self, policy: EgressPolicy, limits: httpx.Limits = httpx.Limits()) -> None:
        super().__init__(trust_env=False, limits=limits)
        ssl_context: ssl.SSLContext = httpx.create_ssl_context(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def guarded_http_client(policy: EgressPolicy, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The shared `ctx.http`: every outbound httpx request of the server goes through the policy."""
    return httpx.AsyncClient(transport=GuardedTransport(policy), timeout=timeout, trust_env=False)
