"""SSRF guards: the registration validator and the dial-time check (spec 03 §1.2, §1.5, §6; spec 04 §1.9, §7).

Only IP literals, `localhost` and a `.invalid` name reach the real resolver; other names go through a
monkeypatched resolver, so no test dials or resolves an external host.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from workspace_server.auth import ssrf
from workspace_server.auth.ssrf import UnsafeURL, is_safe_ip, is_safe_url, validate_agent_url
from workspace_server.config import Settings


def settings(**overrides: str) -> Settings:
    base = {"MOLECULE_ENV": "", "ADMIN_TOKEN": "", "MOLECULE_DEPLOY_MODE": "", "MOLECULE_ORG_ID": ""}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


STRICT = settings()
SAAS = settings(MOLECULE_DEPLOY_MODE="saas")
ORG_ONLY = settings(MOLECULE_ORG_ID="org-123")  # MOLECULE_ORG_ID alone enables SaaS mode
TYPO = settings(MOLECULE_DEPLOY_MODE="sass", MOLECULE_ORG_ID="org-123")  # unknown mode stays strict
DEV = settings(MOLECULE_ENV="development")
DEV_SHORT = settings(MOLECULE_ENV="dev")

FAKE_DNS = {
    "example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "inward.example.com": ["93.184.215.14", "10.0.0.7"],  # one bad answer poisons the lot
    "metadata.example.com": ["169.254.169.254"],
    "vpc.example.com": ["10.1.2.3"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ssrf.resolve

    async def resolve(host: str) -> list[Any]:
        if host in FAKE_DNS:
            return [ipaddress.ip_address(a) for a in FAKE_DNS[host]]
        numeric = all(c in "0123456789.x" for c in host)  # inet_aton forms resolve locally
        if host == "localhost" or host.endswith(".invalid") or numeric:
            return await real(host)
        raise AssertionError(f"test tried to resolve {host}")

    monkeypatch.setattr(ssrf, "resolve", resolve)


async def agent_ok(url: str, s: Settings = STRICT) -> bool:
    try:
        await validate_agent_url(url, s)
    except UnsafeURL:
        return False
    return True


# ---- registration validator ----

AGENT_ALWAYS_REJECTED = [
    "",
    "not a url",
    "http://",
    "http:///path",
    "file:///etc/passwd",
    "ftp://example.com/",
    "gopher://example.com/",
    "javascript:alert(1)",
    "http://[zz]/",
    "http://nxdomain.invalid/",
    "http://user:pw@example.com/",
    "http://example.com\\@127.0.0.1/",
    "http://exa mple.com/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.0.1/",
    "http://127.0.0.1:8000/",
    "http://127.8.9.10/",
    "http://[::1]:8000/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://192.0.2.1/",
    "http://198.51.100.1/",
    "http://203.0.113.254/",
    "http://100.64.0.1/",
    "http://100.127.255.255/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://0.0.0.0:8000/",
    "http://[::]/",
    "http://[fc00::1]/",
    "http://[2001:db8::1]/",
    "http://2130706433/",  # 127.0.0.1 as a decimal name: resolved, then rejected
    "http://127.1/",
    "http://metadata.example.com/",
    "http://mapped.example.com/",
]

AGENT_PRIVATE = [
    "http://10.0.0.5:8000/",
    "http://172.16.0.1/",
    "http://172.31.0.2:8000/",
    "http://192.168.1.2/",
    "http://[fd00::1]/",
    "http://[fd12:3456::1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://vpc.example.com/",
    "http://inward.example.com/",
]

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


@pytest.mark.parametrize("url", AGENT_ALWAYS_REJECTED)
@pytest.mark.parametrize("s", [STRICT, SAAS, DEV], ids=["strict", "saas", "dev"])
async def test_agent_url_always_rejected(url: str, s: Settings) -> None:
    assert not await agent_ok(url, s)


@pytest.mark.parametrize("url", AGENT_PRIVATE)
async def test_agent_url_private_ranges_follow_saas_mode(url: str) -> None:
    assert not await agent_ok(url, STRICT)
    assert not await agent_ok(url, DEV)  # dev mode does not relax registration
    assert not await agent_ok(url, TYPO)
    assert await agent_ok(url, SAAS)
    assert await agent_ok(url, ORG_ONLY)


@pytest.mark.parametrize("url", AGENT_ALLOWED)
async def test_agent_url_allowed(url: str) -> None:
    assert await agent_ok(url, STRICT)


# ---- dial-time check ----

DIAL_NEVER = [
    "http://169.254.169.254/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
    "http://192.0.2.1/",
    "http://198.51.100.1/",
    "http://203.0.113.254/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://224.0.0.251/",
    "http://[ff02::1]/",
    "http://[ff01::1]/",
    "http://[fc00::1]/",
    "http://nxdomain.invalid/",
    "ftp://example.com/",
    "http://",
    "http://metadata.example.com/",
]


@pytest.mark.parametrize("url", DIAL_NEVER)
@pytest.mark.parametrize("s", [STRICT, SAAS, DEV, DEV_SHORT], ids=["strict", "saas", "dev", "dev-short"])
async def test_dial_never_allowed(url: str, s: Settings) -> None:
    assert not await is_safe_url(url, s)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/", "http://[::1]:8000/", "http://localhost:9000/", "http://mapped.example.com/"],
)
async def test_dial_loopback_only_in_dev_mode(url: str) -> None:
    assert not await is_safe_url(url, STRICT)
    assert not await is_safe_url(url, SAAS)
    assert await is_safe_url(url, DEV)
    assert await is_safe_url(url, DEV_SHORT)
    # the dial check keys on MOLECULE_ENV, as the reference does; ADMIN_TOKEN does not close it
    assert await is_safe_url(url, settings(MOLECULE_ENV="development", ADMIN_TOKEN="x"))
    assert not await is_safe_url(url, settings(MOLECULE_ENV="production"))


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/",
        "http://172.31.0.2/",
        "http://192.168.0.1/",
        "http://[fd00::1]/",
        "http://vpc.example.com/",
    ],
)
async def test_dial_private_in_saas_or_dev(url: str) -> None:
    assert not await is_safe_url(url, STRICT)
    assert not await is_safe_url(url, TYPO)
    assert await is_safe_url(url, SAAS)
    assert await is_safe_url(url, ORG_ONLY)
    assert await is_safe_url(url, DEV)


@pytest.mark.parametrize("url", ["http://example.com/", "https://93.184.215.14:443/x"])
async def test_dial_public_allowed(url: str) -> None:
    assert await is_safe_url(url, STRICT)


def test_is_safe_ip_helper() -> None:
    assert is_safe_ip("93.184.215.14", STRICT)
    assert not is_safe_ip("169.254.169.254", DEV)
    assert not is_safe_ip("127.0.0.1", STRICT)
    assert is_safe_ip("127.0.0.1", DEV)
    assert is_safe_ip(ipaddress.ip_address("10.0.0.1"), SAAS)
    assert not is_safe_ip("not an ip", DEV)


async def test_real_resolver_handles_localhost_and_nxdomain() -> None:
    real = ssrf.resolve
    assert any(ip.is_loopback for ip in await real("localhost"))
    with pytest.raises(UnsafeURL):
        await real("nxdomain.invalid")
