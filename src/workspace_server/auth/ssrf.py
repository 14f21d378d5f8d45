"""SSRF guards for URLs that agents hand us and that we later dial (spec 03 §1.2, §1.5; spec 04 §1.9).

Two policies share one parser and one resolver:

- `validate_agent_url` — the strict check at registration. Never relaxed by dev mode; RFC-1918 and
  fd00::/8 pass only in SaaS mode (sibling VPC hosts); the literal name `localhost` passes unresolved.
- `is_safe_url` — the check before dialing (discovery, A2A proxy, MCP). Loopback passes only in dev
  mode (a self-hosted platform reaches its containers on 127.0.0.1); private ranges pass in SaaS or dev.

Names are resolved and *every* address must pass: one bad answer rejects the URL (DNS rebinding to an
inward address). Resolution failure rejects too. IPv4-mapped (and NAT64 well-known) IPv6 addresses are
judged as the IPv4 address they carry. URLs are parsed with httpx — the parser the dialer uses — and
anything it could read differently from another parser (userinfo, backslashes, encoded hosts) is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpx

from workspace_server.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS_TIMEOUT = 5.0


class UnsafeURL(ValueError):
    """The URL must not be stored or dialed. The message is for logs only, never for clients."""


def _nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


LOOPBACK = _nets("127.0.0.0/8", "::1/128")
LINK_LOCAL = _nets("169.254.0.0/16", "fe80::/10")  # 169.254.169.254 is every cloud's metadata service
TEST_NETS = _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
CGNAT = _nets("100.64.0.0/10")
MULTICAST = _nets("224.0.0.0/4", "ff00::/8")
# Never a host an agent can live on; 0.0.0.0 and :: reach the local machine on Linux.
UNROUTABLE = _nets("0.0.0.0/8", "240.0.0.0/4", "::/128")
PRIVATE = _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
ULA_RESERVED = _nets("fc00::/8")  # the half of fc00::/7 that no mode allows
NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Registration blocks these in every mode (spec 03 §1.2) — loopback included, dev mode or not.
AGENT_ALWAYS_BLOCKED = LOOPBACK + LINK_LOCAL + TEST_NETS + CGNAT + MULTICAST + UNROUTABLE + ULA_RESERVED
# The dial-time check blocks these in every mode; loopback and private ranges are decided by mode.
DIAL_ALWAYS_BLOCKED = LINK_LOCAL + TEST_NETS + CGNAT + MULTICAST + UNROUTABLE + ULA_RESERVED


def normalise_ip(ip: IPAddress) -> IPAddress:
    """Judge an IPv6 address that carries an IPv4 one (mapped or NAT64) as that IPv4 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.scope_id is not None:  # fe80::1%eth0: the zone does not change the range
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _in_any(ip: IPAddress, nets: Iterable[Network]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def dev_mode_allows_loopback(settings: Settings) -> bool:
    """Dial-time dev relaxation: MOLECULE_ENV alone decides, as in the reference (ADMIN_TOKEN does not)."""
    return settings.env_name in ("dev", "development")


def agent_ip_allowed(ip: IPAddress, *, saas: bool) -> bool:
    """Registration policy for one address."""
    ip = normalise_ip(ip)
    if _in_any(ip, AGENT_ALWAYS_BLOCKED):
        return False
    if _in_any(ip, PRIVATE):
        return saas
    return True


def dial_ip_allowed(ip: IPAddress, *, saas: bool, dev: bool) -> bool:
    """Dial-time policy for one address (the A2A proxy can call this on the peer it connected to)."""
    ip = normalise_ip(ip)
    if _in_any(ip, LOOPBACK):
        return dev
    if _in_any(ip, DIAL_ALWAYS_BLOCKED):
        return False
    if _in_any(ip, PRIVATE):
        return saas or dev
    return True


def is_safe_ip(ip: str | IPAddress, settings: Settings) -> bool:
    """Sync helper for callers that already hold an address (e.g. after their own resolution)."""
    try:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError:
        return False
    return dial_ip_allowed(addr, saas=settings.saas_mode, dev=dev_mode_allows_loopback(settings))


def parse_host(url: str) -> str:
    """The host an http(s) URL would be dialed at (IDNA-encoded; IPv6 without brackets)."""
    if not url or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url) or "\\" in url:
        raise UnsafeURL("malformed url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise UnsafeURL("malformed url") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL("scheme must be http or https")
    if parsed.userinfo:
        raise UnsafeURL("userinfo is not allowed")
    if parsed.port is not None and not 0 < parsed.port <= 65535:
        raise UnsafeURL("port out of range")
    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeDecodeError:
        raise UnsafeURL("malformed host") from None
    if not host or "%" in host:
        raise UnsafeURL("empty or encoded host")
    return host


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve(host: str) -> list[IPAddress]:
    """Every address `host` resolves to, without blocking the event loop. Tests monkeypatch this."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout=DNS_TIMEOUT
        )
    except (OSError, UnicodeError, TimeoutError) as exc:
        raise UnsafeURL(f"cannot resolve {host}") from exc
    addrs: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ip_literal(str(sockaddr[0]))
        if ip is not None:
            addrs.append(ip)
    if not addrs:
        raise UnsafeURL(f"{host} resolved to no addresses")
    return addrs


async def _addresses(host: str) -> list[IPAddress]:
    literal = ip_literal(host)
    return [literal] if literal is not None else await resolve(host)


async def validate_agent_url(url: str, settings: Settings) -> None:
    """Registration check; raises UnsafeURL. `localhost` by name is the one loopback spelling allowed."""
    host = parse_host(url)
    if host == "localhost":
        return
    saas = settings.saas_mode
    for ip in await _addresses(host):
        if not agent_ip_allowed(ip, saas=saas):
            raise UnsafeURL(f"{host} is a blocked address")


async def check_dial_url(url: str, settings: Settings) -> None:
    """Dial-time check; raises UnsafeURL with a log-only reason."""
    host = parse_host(url)
    saas, dev = settings.saas_mode, dev_mode_allows_loopback(settings)
    for ip in await _addresses(host):
        if not dial_ip_allowed(ip, saas=saas, dev=dev):
            raise UnsafeURL(f"{host} is not publicly routable")


async def is_safe_url(url: str, settings: Settings) -> bool:
    try:
        await check_dial_url(url, settings)
    except UnsafeURL:
        return False
    return True
