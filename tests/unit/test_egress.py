"""The egress policy (egress/policy.py): URL forms, ranges per mode, registration, allow-list (issue 11 §2;
spec 03 §1.2, §1.5; spec 04 §1.9).

Modes: production = ADMIN_TOKEN set or MOLECULE_ENV=production; dev = MOLECULE_ENV=dev(elopment) without
ADMIN_TOKEN; open = neither. Only IP literals, `localhost` and a `.invalid` name reach the real resolver;
other names go through a monkeypatched resolver, so no test resolves an external host.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from workspace_server.config import Settings
from workspace_server.egress import UnsafeURL, is_safe_url, parse_url, policy_for, validate_agent_url
from workspace_server.egress import policy as policy_mod


def settings(**overrides: str) -> Settings:
    base = {"MOLECULE_ENV": "", "ADMIN_TOKEN": "", "MOLECULE_DEPLOY_MODE": "", "MOLECULE_ORG_ID": ""}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


OPEN = settings()  # the open bootstrap mode
PROD = settings(ADMIN_TOKEN="admin")
PROD_ENV = settings(MOLECULE_ENV="production")
SAAS = settings(MOLECULE_DEPLOY_MODE="saas", ADMIN_TOKEN="admin")
ORG_ONLY = settings(MOLECULE_ORG_ID="org-123", ADMIN_TOKEN="admin")  # MOLECULE_ORG_ID alone enables SaaS
TYPO = settings(MOLECULE_DEPLOY_MODE="sass", MOLECULE_ORG_ID="org-123")  # unknown mode stays strict
DEV = settings(MOLECULE_ENV="development")
DEV_SHORT = settings(MOLECULE_ENV="dev")
DEV_WITH_ADMIN = settings(MOLECULE_ENV="development", ADMIN_TOKEN="x")  # ADMIN_TOKEN: production
ALL_MODES = [OPEN, PROD, PROD_ENV, SAAS, DEV, DEV_SHORT]
ALL_IDS = ["open", "prod", "prod-env", "saas", "dev", "dev-short"]

REAL_RESOLVE = policy_mod.resolve
FAKE_DNS = {
    "example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "inward.example.com": ["93.184.215.14", "10.0.0.7"],  # one bad answer poisons the lot
    "metadata.example.com": ["169.254.169.254"],
    "vpc.example.com": ["10.1.2.3"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "loop.example.com": ["127.0.0.1"],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = policy_mod.resolve

    async def resolve(host: str) -> list[Any]:
        if host in FAKE_DNS:
            return [ipaddress.ip_address(a) for a in FAKE_DNS[host]]
        if host == "localhost" or host.endswith(".invalid"):
            return await real(host)
        raise AssertionError(f"test tried to resolve {host}")

    monkeypatch.setattr(policy_mod, "resolve", resolve)


async def agent_ok(url: str, s: Settings = OPEN) -> bool:
    try:
        await validate_agent_url(url, s)
    except UnsafeURL:
        return False
    return True


# ---- URL forms ----

# 10.0.0.1 (and 127.0.0.1) spelled every way inet_aton accepts, plus parser-confusing forms: refused by
# the parser in every mode, before any DNS
CONFUSING = [
    "",
    "not a url",
    "http://",
    "http:///path",
    "file:///etc/passwd",
    "ftp://example.com/",
    "gopher://example.com/",
    "javascript:alert(1)",
    "http://[zz]/",
    "http://user:pw@example.com/",
    "http://user@example.com/",
    "http://a@127.0.0.1@example.com/",
    "http://example.com\\@127.0.0.1/",
    "http://example.com\\.evil/",
    "http://exa mple.com/",
    "http://example.com/\r\nX: y",
    "http://exam%70le.com/",
    "http://167772161/",  # 10.0.0.1 as an integer
    "http://0x0a000001/",  # hex
    "http://0xa.0.0.1/",
    "http://012.0.0.1/",  # octal
    "http://10.1/",  # short form
    "http://10.0.0.1./",  # trailing dot
    "http://2130706433/",  # 127.0.0.1
    "http://0x7f.1/",
    "http://127.1/",
    "http://0/",
    "http://example.com:0/",
    "http://example.com:65536/",
]


@pytest.mark.parametrize("url", CONFUSING)
def test_confusing_forms_never_parse(url: str) -> None:
    with pytest.raises(UnsafeURL):
        parse_url(url)


@pytest.mark.parametrize("url", CONFUSING)
@pytest.mark.parametrize("s", ALL_MODES, ids=ALL_IDS)
async def test_confusing_forms_refused_everywhere(url: str, s: Settings) -> None:
    assert not await is_safe_url(url, s)
    assert not await agent_ok(url, s)


def test_parse_gives_the_dialed_host_and_port() -> None:
    t = parse_url("https://Example.COM/a2a")
    assert (t.scheme, t.host, t.port, t.literal) == ("https", "example.com", 443, None)
    t = parse_url("http://[::ffff:10.0.0.1]:8000/")
    assert t.port == 8000 and t.literal == ipaddress.ip_address("::ffff:10.0.0.1")
    assert parse_url("http://ws-0123456789ab:8000").host == "ws-0123456789ab"
    assert parse_url("http://example.com/a2a?by=a@b#c@d").host == "example.com"  # @ after the authority


# ---- the dial policy per mode ----

# refused in every mode (unless allow-listed)
DIAL_NEVER = [
    "http://169.254.169.254/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fe80::1]/",
    "http://192.0.2.1/",
    "http://198.51.100.1/",
    "http://203.0.113.254/",
    "http://100.64.0.1/",
    "http://100.127.255.255/",
    "http://0.0.0.0/",
    "http://0.1.2.3/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://224.0.1.1/",
    "http://239.255.255.250/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://[ff02::1]/",
    "http://[ff0e::1]/",
    "http://[fc00::1]/",
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[64:ff9b::5db8:d70e]/",  # NAT64 of a public address: refused too
    "http://[64:ff9b:1::1]/",
    "http://[::a00:1]/",  # IPv4-compatible 10.0.0.1
    "http://[::7f00:1]/",  # IPv4-compatible 127.0.0.1
    "http://[2002:a00:1::1]/",  # 6to4
    "http://[2001::1]/",  # Teredo
    "http://[2001:db8::1]/",
    "http://nxdomain.invalid/",
    "http://metadata.example.com/",
    "http://metadata.google.internal/",
]


@pytest.mark.parametrize("url", DIAL_NEVER)
@pytest.mark.parametrize("s", ALL_MODES, ids=ALL_IDS)
async def test_dial_never_allowed(url: str, s: Settings) -> None:
    assert not await is_safe_url(url, s)


PRIVATE = [
    "http://10.0.0.5/",
    "http://10.1.2.3:8000/",
    "http://172.17.0.2/",
    "http://172.31.0.2/",
    "http://192.168.0.1/",
    "http://[fd00::1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:192.168.1.1]/",
    "http://vpc.example.com/",
    "http://inward.example.com/",
]


@pytest.mark.parametrize("url", PRIVATE)
async def test_dial_private_only_in_saas(url: str) -> None:
    for s in (OPEN, PROD, PROD_ENV, DEV, DEV_SHORT, TYPO):
        assert not await is_safe_url(url, s), s
    assert await is_safe_url(url, SAAS)
    assert await is_safe_url(url, ORG_ONLY)


LOOPBACK = [
    "http://127.0.0.1:8000/",
    "http://127.8.9.10/",
    "http://[::1]:8000/",
    "http://localhost:9000/",
    "http://loop.example.com/",
    "http://mapped.example.com/",
    "http://[::ffff:127.0.0.1]/",
]


@pytest.mark.parametrize("url", LOOPBACK)
async def test_dial_loopback_outside_production_only(url: str) -> None:
    for s in (OPEN, DEV, DEV_SHORT, TYPO):
        assert await is_safe_url(url, s), s
    for s in (PROD, PROD_ENV, SAAS, ORG_ONLY, DEV_WITH_ADMIN):
        assert not await is_safe_url(url, s), s


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://93.184.215.14:443/x",
        "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
    ],
)
@pytest.mark.parametrize("s", ALL_MODES, ids=ALL_IDS)
async def test_dial_public_allowed(url: str, s: Settings) -> None:
    assert await is_safe_url(url, s)


async def test_allow_cidrs_open_exactly_what_they_list() -> None:
    s = settings(ADMIN_TOKEN="x", EGRESS_ALLOW_CIDRS="10.1.0.0/16, 192.168.7.7 fd00:1::/64")
    assert await is_safe_url("http://10.1.2.3:8000/", s)
    assert await is_safe_url("http://vpc.example.com/", s)
    assert await is_safe_url("http://[::ffff:10.1.2.3]/", s)  # mapped: judged as the IPv4 address
    assert await is_safe_url("http://192.168.7.7/", s)
    assert await is_safe_url("http://[fd00:1::5]/", s)
    for url in ("http://10.2.0.1/", "http://192.168.7.8/", "http://[fd00:2::1]/", "http://127.0.0.1/"):
        assert not await is_safe_url(url, s), url
    # registration follows the same list: an operator's agents on a private network can register
    assert await agent_ok("http://10.1.2.3:8000/", s)
    assert not await agent_ok("http://10.2.0.1:8000/", s)


async def test_allow_entry_with_a_port_opens_that_port_only() -> None:
    """`127.0.0.1/32:3000`: a loopback Langfuse in production without opening loopback to agent URLs."""
    s = settings(ADMIN_TOKEN="x", EGRESS_ALLOW_CIDRS="127.0.0.1/32:3000, ::1/128:3000 fd00::/8:443")
    assert await is_safe_url("http://127.0.0.1:3000/api", s)
    assert await is_safe_url("http://localhost:3000/api", s)  # both of its answers are on the list
    assert await is_safe_url("http://[::ffff:127.0.0.1]:3000/", s)
    assert await is_safe_url("https://[fd00::5]/", s)  # 443 by default
    for url in ("http://127.0.0.1:3001/", "http://127.0.0.1/", "http://localhost:8000/", "http://[fd00::5]/"):
        assert not await is_safe_url(url, s), url
    p = policy_for(s)
    p.check_ip("127.0.0.1", port=3000)
    with pytest.raises(OSError):
        p.check_ip("127.0.0.1", port=3001)
    with pytest.raises(OSError):
        p.check_ip("127.0.0.1")  # port unknown: a port-scoped entry does not apply


@pytest.mark.parametrize(
    "raw", ["10.0.0.0/33", "10.0.0.1:80", "127.0.0.1/32:0", "127.0.0.1/32:99999", "127.0.0.1/32:x", "nope"]
)
def test_allow_cidrs_typo_refuses_to_start(raw: str) -> None:
    with pytest.raises(ValueError):
        settings(EGRESS_ALLOW_CIDRS=raw)


def test_policy_is_shared_per_configuration() -> None:
    assert policy_for(settings(ADMIN_TOKEN="a")) is policy_for(settings(ADMIN_TOKEN="b"))
    assert policy_for(OPEN) is not policy_for(PROD)


# ---- registration (spec 03 §1.2): loopback literals refused in every mode, `localhost` by name passes ----


@pytest.mark.parametrize(
    "url", [*DIAL_NEVER, "http://127.0.0.1:8000/", "http://[::1]/", "http://loop.example.com/"]
)
@pytest.mark.parametrize("s", ALL_MODES, ids=ALL_IDS)
async def test_agent_url_always_rejected(url: str, s: Settings) -> None:
    assert not await agent_ok(url, s)


@pytest.mark.parametrize("url", PRIVATE)
async def test_agent_url_private_ranges_follow_saas_mode(url: str) -> None:
    for s in (OPEN, PROD, DEV, TYPO):
        assert not await agent_ok(url, s)
    assert await agent_ok(url, SAAS)
    assert await agent_ok(url, ORG_ONLY)


AGENT_ALLOWED = [
    "http://localhost:9000",
    "https://localhost/",
    "http://LOCALHOST:9000/",
    "http://example.com/",
    "https://example.com:8443/a2a",
    "http://93.184.215.14/",
    "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
    "http://172.32.0.1/",  # just outside 172.16/12
    "http://100.128.0.1/",  # just outside 100.64/10
]


@pytest.mark.parametrize("url", AGENT_ALLOWED)
@pytest.mark.parametrize("s", ALL_MODES, ids=ALL_IDS)
async def test_agent_url_allowed(url: str, s: Settings) -> None:
    assert await agent_ok(url, s)


async def test_real_resolver_handles_localhost_and_nxdomain() -> None:
    assert any(ip.is_loopback for ip in await REAL_RESOLVE("localhost"))
    with pytest.raises(UnsafeURL):
        await REAL_RESOLVE("nxdomain.invalid")


def test_check_ip_helper() -> None:
    p = policy_for(OPEN)
    p.check_ip("127.0.0.1")
    p.check_ip("93.184.215.14")
    for bad in ("169.254.169.254", "10.0.0.1", "not an ip", "::ffff:10.0.0.1"):
        with pytest.raises(OSError):
            p.check_ip(bad)
    with pytest.raises(OSError):
        policy_for(PROD).check_ip("127.0.0.1")
