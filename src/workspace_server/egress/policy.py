"""The egress policy: may the server dial this address? (issue 11 §2; spec 03 §1.2/§1.5, 04 §1.9).

One policy, three modes (decided from `Settings`, never from the caller):

- production (`ADMIN_TOKEN` set, or `MOLECULE_ENV` prod/production): only globally routable unicast
  addresses, plus the operator's `EGRESS_ALLOW_CIDRS`;
- dev (`MOLECULE_ENV` dev/development) and the open bootstrap mode (neither setting): the same, plus
  loopback (agents on the operator's own machine);
- SaaS (`MOLECULE_DEPLOY_MODE=saas`, or an org id): RFC 1918 and fd00::/8 pass as well (agents on sibling
  VPC hosts), as in the reference. Loopback follows the production/dev rule above.

Never allowed unless listed in `EGRESS_ALLOW_CIDRS`: 0.0.0.0/8 and ::, link-local (169.254/16 with every
cloud's metadata service, fe80::/10), 100.64/10, multicast, broadcast and the other reserved IPv4 blocks,
fc00::/8, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, IPv4-compatible ::/96, 6to4 and Teredo, documentation
ranges. An IPv4-mapped address (::ffff:a.b.c.d) is judged as the IPv4 address it carries.

Addresses the server itself assigned to a workspace it runs are trusted through `Assigned`, not through
this table: the A2A proxy and the transcript check that record before they dial.

URLs are parsed strictly: http/https only, no userinfo, no backslash, whitespace or control characters,
no percent-encoded host, and no numeric host that is not a canonical dotted quad (`167772161`,
`0x0a000001`, `012.0.0.1`, `10.1` all reach 10.x through inet_aton and are refused outright).

Exceptions carry reasons for the server log only; clients get the spec's fixed error strings.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from workspace_server.config import Settings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS_TIMEOUT = 5.0


class UnsafeURL(ValueError):
    """The URL must not be stored or dialed. The message is for logs only, never for clients."""


class EgressRefused(OSError):
    """Raised at connect time (resolver / network backend): the address is not one the server may dial.

    An OSError so that aiohttp and httpcore treat it as a failed connect; the message is for logs only.
    """


def _nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


LOOPBACK = _nets("127.0.0.0/8", "::1/128")
PRIVATE = _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")  # SaaS: sibling hosts
# Refused in every mode (unless allow-listed). Most are also `not is_global`, which is checked as well;
# these are listed because Python's table calls some of them global (multicast, NAT64, ::/96, 6to4).
ALWAYS_REFUSED = _nets(
    "0.0.0.0/8",
    "169.254.0.0/16",  # link-local, 169.254.169.254 = the metadata service
    "100.64.0.0/10",  # carrier-grade NAT
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, 255.255.255.255 broadcast included
    "::/96",  # :: and IPv4-compatible (deprecated) ::a.b.c.d; ::1 is handled as loopback first
    "64:ff9b::/96",  # NAT64 well-known prefix
    "64:ff9b:1::/48",  # NAT64 local-use
    "100::/64",  # discard
    "2001::/32",  # Teredo
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4
    "fc00::/7",  # ULA; fd00::/8 passes in SaaS mode only (checked before this table)
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.azure.com", "metadata", "instance-data"})


def _in_any(ip: IPAddress, nets: Iterable[Network]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def normalise_ip(ip: IPAddress) -> IPAddress:
    """Drop an IPv6 zone; judge an IPv4-mapped address (::ffff:a.b.c.d) as the IPv4 address it carries."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.scope_id is not None:  # fe80::1%eth0: the zone does not change the range
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    mapped = ip.ipv4_mapped
    return mapped if mapped is not None else ip


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class Allowed:
    """One `EGRESS_ALLOW_CIDRS` entry: a network, and optionally the one port it is opened for."""

    net: Network
    port: int | None = None

    def matches(self, ip: IPAddress, port: int | None) -> bool:
        if ip.version != self.net.version or ip not in self.net:
            return False
        return self.port is None or self.port == port


def parse_cidrs(raw: str) -> tuple[Allowed, ...]:
    """`EGRESS_ALLOW_CIDRS`: entries separated by commas or spaces, each `CIDR` or `CIDR:port` (the port
    after the prefix length: `127.0.0.1/32:3000`, `fd00::/8:443`); a bare address is a /32 (/128).
    Raises ValueError on anything else."""
    entries: list[Allowed] = []
    for part in re.split(r"[,\s]+", raw.strip()):
        if not part:
            continue
        port: int | None = None
        addr, slash, length = part.partition("/")
        if slash and ":" in length:
            length, _, port_text = length.partition(":")
            if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
                raise ValueError(f"bad port in {part!r}")
            port = int(port_text)
        entries.append(Allowed(ipaddress.ip_network(f"{addr}{slash}{length}", strict=False), port))
    return tuple(entries)


# ---- URL parsing ----

_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*\.?$", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """Where a URL would be dialed: scheme, host (IDNA-encoded, IPv6 without brackets), port."""

    scheme: str
    host: str
    port: int
    literal: IPAddress | None


def parse_url(url: str) -> Target:
    """Parse an http(s) URL strictly, refusing every form two parsers could read differently."""
    if not isinstance(url, str) or not url or len(url) > 8192:
        raise UnsafeURL("malformed url")
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url) or "\\" in url:
        raise UnsafeURL("malformed url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise UnsafeURL("malformed url") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL("scheme must be http or https")
    if parsed.userinfo or "@" in re.split(r"[/?#]", url.split("//", 1)[-1], maxsplit=1)[0]:
        raise UnsafeURL("userinfo is not allowed")
    port = parsed.port
    if port is not None and not 0 < port <= 65535:
        raise UnsafeURL("port out of range")
    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeDecodeError:
        raise UnsafeURL("malformed host") from None
    if not host or "%" in host:
        raise UnsafeURL("empty or encoded host")
    literal = ip_literal(host)
    if literal is None:
        if _NUMERIC_HOST.match(host):  # 167772161, 0x0a000001, 012.0.0.1, 10.1, 10.0.0.1.
            raise UnsafeURL("non-canonical numeric host")
        if not re.fullmatch(r"[a-z0-9._-]+", host) or host.startswith(".") or ".." in host:
            raise UnsafeURL("malformed host")
    elif isinstance(literal, ipaddress.IPv4Address) and str(literal) != host:
        raise UnsafeURL("non-canonical numeric host")
    default = 443 if parsed.scheme == "https" else 80
    return Target(parsed.scheme, host, port or default, literal)


# ---- the policy ----


@dataclass(frozen=True, eq=False)  # identity hash: `check_static`'s cache key costs nothing per call
class EgressPolicy:
    """Immutable: built once per configuration (see `policy_for`)."""

    production: bool
    saas: bool
    allow: tuple[Allowed, ...] = ()

    @property
    def loopback_allowed(self) -> bool:
        return not self.production

    def allow_listed(self, ip: IPAddress, port: int | None = None) -> bool:
        ip = normalise_ip(ip)
        return any(a.matches(ip, port) for a in self.allow)

    def refusal(self, ip: IPAddress, port: int | None = None) -> str | None:
        """Why the server may not dial `ip` (at `port`, when known) — for the log — or None when it may."""
        ip = normalise_ip(ip)
        if self.allow_listed(ip, port):
            return None
        if _in_any(ip, LOOPBACK):
            return None if self.loopback_allowed else "loopback (production mode)"
        if _in_any(ip, PRIVATE):
            return None if self.saas else "private range"
        if _in_any(ip, ALWAYS_REFUSED) or not ip.is_global or ip.is_multicast:
            return "not a public unicast address"
        return None

    def allows(self, ip: IPAddress, port: int | None = None) -> bool:
        return self.refusal(ip, port) is None

    def check_ip(self, ip: IPAddress | str, host: str = "", port: int | None = None) -> None:
        """Raise EgressRefused unless `ip` may be dialed (the connect-time check)."""
        addr = ip_literal(ip) if isinstance(ip, str) else ip
        if addr is None:
            raise EgressRefused(f"{host or ip}: not an IP address")
        why = self.refusal(addr, port)
        if why is not None:
            raise EgressRefused(f"{host or addr} -> {addr}: {why}")

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - the policy lives as long as the app; bounded
    def check_static(self, url: str) -> Target:
        """Everything that can be decided without DNS: the URL's form and an IP-literal host.

        Names are judged at connect time by the guarded resolver / network backend. Cached per URL (the
        A2A hot path calls this once per message). Raises UnsafeURL.
        """
        target = parse_url(url)
        if target.host in METADATA_NAMES:
            raise UnsafeURL(f"metadata hostname {target.host}")
        if target.literal is not None:
            why = self.refusal(target.literal, target.port)
            if why is not None:
                raise UnsafeURL(f"{target.host}: {why}")
        return target

    async def check_url(self, url: str) -> Target:
        """The full pre-dial check: form, then every address the host resolves to. Raises UnsafeURL."""
        target = self.check_static(url)
        if target.literal is None:
            for ip in await resolve(target.host):
                why = self.refusal(ip, target.port)
                if why is not None:
                    raise UnsafeURL(f"{target.host} -> {ip}: {why}")
        return target

    async def check_registration_url(self, url: str) -> None:
        """`/registry/register` (spec 03 §1.2): as `check_url`, but loopback is refused in every mode
        unless allow-listed; the name `localhost` passes unresolved (dialing it is decided later)."""
        target = self.check_static(url)
        if target.host == "localhost":
            return
        addrs = [target.literal] if target.literal is not None else await resolve(target.host)
        for ip in addrs:
            n = normalise_ip(ip)
            if _in_any(n, LOOPBACK) and not self.allow_listed(n, target.port):
                raise UnsafeURL(f"{target.host}: loopback")
            why = self.refusal(ip, target.port)
            if why is not None:
                raise UnsafeURL(f"{target.host} -> {ip}: {why}")


@functools.lru_cache(maxsize=64)
def _policy(production: bool, saas: bool, allow_raw: str) -> EgressPolicy:
    policy = EgressPolicy(production=production, saas=saas, allow=parse_cidrs(allow_raw))
    log.info(
        "egress: public addresses%s%s%s, and addresses this server assigned to its agents",
        "" if production else ", loopback",
        ", RFC 1918 and fd00::/8 (SaaS)" if saas else "",
        f", EGRESS_ALLOW_CIDRS {allow_raw.strip()}" if allow_raw.strip() else "",
    )
    return policy


def policy_for(s: Settings) -> EgressPolicy:
    """The policy of these settings (one instance per distinct configuration, so its caches are shared).
    Production mode (`ADMIN_TOKEN` set or `MOLECULE_ENV` prod/production) is Settings' to decide: it is
    everything but the open bootstrap mode."""
    return _policy(not s.open_bootstrap, s.saas_mode, s.EGRESS_ALLOW_CIDRS)


async def resolve(host: str) -> list[IPAddress]:
    """Every address `host` resolves to, without blocking the event loop. Raises UnsafeURL."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout=DNS_TIMEOUT
        )
    except (OSError, UnicodeError, TimeoutError) as exc:
        raise UnsafeURL(f"cannot resolve {host}") from exc
    addrs = [ip for info in infos if (ip := ip_literal(str(info[4][0]))) is not None]
    if not addrs:
        raise UnsafeURL(f"{host} resolved to no addresses")
    return addrs


# ---- addresses the server assigned ----


@dataclass
class Assigned:
    """Workspace id → the URL this server's backend started its agent at (process port, container).

    Filled by the orchestrator when a start succeeds, never from anything an agent sends.
    """

    _urls: dict[str, str] = field(default_factory=dict)

    def record(self, ws_id: str, url: str) -> None:
        self._urls[ws_id] = url

    def forget(self, ws_id: str) -> None:
        self._urls.pop(ws_id, None)

    def get(self, ws_id: str) -> str | None:
        return self._urls.get(ws_id)

    def is_assigned(self, ws_id: str, url: str) -> bool:
        return bool(url) and self._urls.get(ws_id) == url
