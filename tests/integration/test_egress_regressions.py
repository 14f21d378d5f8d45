"""Issue 11 §2 regressions: SSRF through the transcript, and the check made at connect time.

A workspace sets its agent card's `url` (`POST /registry/update-card`) to a private address in every
spelling the issue lists; `GET /workspaces/:id/transcript` must refuse it without dialing. Every TCP
connect the HTTP clients attempt is recorded and refused here (`dials`), so these tests send no packet
to any address, private or public, whatever the code under test does. Real listeners on private
addresses are in tests/integration/test_egress_netns.py.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.integration.a2a_support import StubAgent, message
from tests.integration.registry_support import add_workspace, bearer, ctx_of, mint_token
from workspace_server.egress import policy as egress_policy

ADMIN = "admin-secret"

# 10.0.0.1 and its neighbours, written every way the issue found getting through (spec 04 §4's lenient
# transcript check let all of these pass)
INWARD = [
    "http://10.0.0.1:8000",
    "http://167772161:8000/",  # 10.0.0.1 as an integer
    "http://0x0a000001/",  # hex
    "http://0xa.0.0.1/",
    "http://012.0.0.1/",  # octal
    "http://10.1/",
    "http://[::ffff:10.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:a00:1]/",
    "http://192.168.1.1/",
    "http://172.17.0.1/",
    "http://100.64.0.1/",
    "http://[fc00::1]/",
    "http://[fd00::1]/",
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[::a00:1]/",  # IPv4-compatible
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0:8000/",
    "http://user@10.0.0.1/",
    "http://example.com\\@10.0.0.1/",
]
LOOPBACK = ["http://127.0.0.1:8000", "http://[::1]:8000/", "http://2130706433:8000/", "http://127.1:8000/"]
REFUSED = ({"error": "workspace URL not allowed"}, {"error": "invalid workspace URL"})


@pytest.fixture
def dials(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every connect httpx (httpcore's anyio backend) attempts is recorded and refused: nothing leaves."""
    seen: list[tuple[str, int]] = []

    async def connect_tcp(remote_host: Any, remote_port: int, **_: Any) -> Any:
        seen.append((str(remote_host), int(remote_port)))
        raise OSError("test: connects are recorded, never made")

    monkeypatch.setattr(anyio, "connect_tcp", connect_tcp)
    return seen


async def _card_url_workspace(client: Any, url: str) -> tuple[str, dict[str, str]]:
    """A workspace that set its own card's url through the real route."""
    ctx = ctx_of(client)
    ws = await add_workspace(ctx, "agent", status="online")
    h = bearer(await mint_token(ctx, ws))
    r = await client.post(
        "/registry/update-card", json={"workspace_id": ws, "agent_card": {"name": "a", "url": url}}, headers=h
    )
    assert r.status_code == 200
    return ws, h


@pytest.mark.parametrize("mode", ["production", "open"])
async def test_transcript_never_dials_a_private_card_url(
    client_factory: ClientFactory, dials: list[tuple[str, int]], mode: str
) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN if mode == "production" else "")
    urls = INWARD + (LOOPBACK if mode == "production" else [])
    for url in urls:
        ws, h = await _card_url_workspace(client, url)
        r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
        assert r.status_code == 400 and r.json() in REFUSED, (url, r.status_code, r.text)
        assert "10.0.0.1" not in r.text and "::" not in r.text  # nothing internal in the answer
    assert dials == []


async def test_transcript_checks_the_address_it_connects_to(
    client_factory: ClientFactory, dials: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS answers public when checked, inward when dialed (rebinding): `ctx.http`'s network backend
    resolves again at connect time, judges that answer, and refuses before connecting."""

    async def public(host: str) -> list[Any]:
        return [egress_policy.ip_literal("93.184.215.14")]

    monkeypatch.setattr(egress_policy, "resolve", public)
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _card_url_workspace(client, "http://localhost:8000/")  # really 127.0.0.1 / ::1
    r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "workspace URL not allowed"})
    assert dials == []


async def test_a2a_proxy_refuses_every_inward_form(client_factory: ClientFactory, agent: StubAgent) -> None:
    """The same forms as an A2A target, in production mode: refused before or at connect, never sent."""
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(client)
    port = agent.url.rsplit(":", 1)[1]
    for url in [
        *INWARD,
        *LOOPBACK,
        agent.url,
        f"http://localhost:{port}",
        f"http://[::ffff:127.0.0.1]:{port}",
    ]:
        ws = await add_workspace(ctx, "t", status="online", url=url)
        r = await ctx.a2a.proxy(ws, json.dumps(message("x")).encode())
        assert (r.status, r.error) == (502, {"error": "workspace URL is not publicly routable"}), url
    assert agent.received == []


@pytest.fixture
def agent() -> Any:
    a = StubAgent()
    yield a
    a.close()


async def test_guarded_connector_judges_the_address_it_connects_to(agent: StubAgent) -> None:
    """Without the proxy's pre-check: an IP literal skips aiohttp's resolver, the connector's socket
    factory still refuses it before connecting; a name is refused by the resolver."""
    import aiohttp

    from workspace_server.egress import EgressPolicy
    from workspace_server.egress.clients import guarded_connector, refused_cause

    port = agent.url.rsplit(":", 1)[1]
    strict = EgressPolicy(production=True, saas=False)
    async with aiohttp.ClientSession(connector=guarded_connector(strict)) as s:
        for url in (agent.url, f"http://[::ffff:127.0.0.1]:{port}", f"http://localhost:{port}"):
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await s.post(url, json=message("x"))
            assert refused_cause(info.value) is not None, url
    assert agent.received == []
    open_mode = EgressPolicy(production=False, saas=False)
    async with aiohttp.ClientSession(connector=guarded_connector(open_mode)) as s:
        async with s.post(agent.url, json=message("x")) as r:
            assert r.status == 200
    assert len(agent.received) == 1
