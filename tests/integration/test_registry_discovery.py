"""Discovery, peers and check-access routes (spec 03 §1.5–§1.7, §2)."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest

from tests.integration.registry_support import (
    ALLOWED_PAIRS,
    DENIED_PAIRS,
    add_workspace,
    bearer,
    build_tree,
    ctx_of,
    mint_token,
    set_columns,
)
from workspace_server import authz
from workspace_server.common.ids import new_id
from workspace_server.common.kv import internal_url_key
from workspace_server.egress import policy as egress_policy


async def discover(client: httpx.AsyncClient, caller: str, target: str, **headers: str) -> httpx.Response:
    return await client.get(f"/registry/discover/{target}", headers={"X-Workspace-ID": caller, **headers})


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names other than localhost resolve to a public address, without touching the network."""

    async def fake(host: str) -> list[Any]:
        if host == "localhost":
            return [ipaddress.ip_address("127.0.0.1")]
        return [ipaddress.ip_address("93.184.215.14")]

    monkeypatch.setattr(egress_policy, "resolve", fake)


# ---- discover ----


async def test_discover_requires_header(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/registry/discover/{new_id()}")
    assert (r.status_code, r.json()) == (400, {"error": "X-Workspace-ID header is required"})


async def test_discover_follows_the_hierarchy(client: httpx.AsyncClient) -> None:
    ids = await build_tree(ctx_of(client))
    for caller, target in ALLOWED_PAIRS:
        r = await discover(client, ids[caller], ids[target])
        assert r.status_code == 200, (caller, target)
        tid = ids[target]
        assert r.json() == {"id": tid, "name": target, "url": f"http://ws-{tid[:12]}:8000"}
    for caller, target in DENIED_PAIRS:
        r = await discover(client, ids[caller], ids[target])
        assert (r.status_code, r.json()) == (403, {"error": "not authorized to discover this workspace"})
    r = await discover(client, ids["FE"], new_id())
    assert r.status_code == 403
    r = await discover(client, new_id(), ids["FE"])
    assert r.status_code == 403


async def test_discover_caches_synthesized_url_and_prefers_registered_one(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    be = ids["BE"]
    await discover(client, ids["FE"], be)
    assert await ctx.kv.get(internal_url_key(be)) == f"http://ws-{be[:12]}:8000"
    r = await client.post(
        "/registry/register", json={"id": be, "url": "http://localhost:9100", "agent_card": {}}
    )
    assert r.status_code == 200
    r = await discover(client, ids["FE"], be)
    assert r.json() == {"id": be, "name": "BE", "url": "http://localhost:9100"}


@pytest.mark.parametrize("status", ["offline", "provisioning", "paused", "failed", "removed"])
async def test_discover_unavailable_target(client: httpx.AsyncClient, status: str) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    await set_columns(ctx, ids["BE"], status=status)
    r = await discover(client, ids["FE"], ids["BE"])
    assert (r.status_code, r.json()) == (503, {"error": "workspace not available", "status": status})


async def test_discover_self_unknown_is_404(client: httpx.AsyncClient) -> None:
    ghost = new_id()
    r = await discover(client, ghost, ghost)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})


async def test_discover_external_target(client: httpx.AsyncClient, public_dns: None) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    await set_columns(ctx, ids["BE"], runtime="external", url="http://localhost:9000/a2a")
    r = await discover(client, ids["FE"], ids["BE"])
    # a container caller gets the host-loopback URL rewritten; the name then resolves publicly here
    assert r.json() == {"id": ids["BE"], "name": "BE", "url": "http://host.docker.internal:9000/a2a"}
    # an external caller gets it verbatim; loopback passes the egress policy outside production mode
    await set_columns(ctx, ids["FE"], runtime="external")
    r = await discover(client, ids["FE"], ids["BE"])
    assert r.json() == {"id": ids["BE"], "name": "BE", "url": "http://localhost:9000/a2a"}
    for inward in ("http://169.254.169.254/", "http://10.0.0.1:9000/", "http://167772161/"):
        await set_columns(ctx, ids["BE"], url=inward)
        r = await discover(client, ids["FE"], ids["BE"])
        assert (r.status_code, r.json()) == (503, {"error": "workspace URL failed safety check"})


async def test_discover_external_loopback_refused_in_production(
    client_factory: Any, public_dns: None
) -> None:
    """Issue 11 §2: in production mode loopback fails the safety check (it passed in open mode above)."""
    client = await client_factory(ADMIN_TOKEN="adm")
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    await set_columns(ctx, ids["BE"], runtime="external", url="http://localhost:9000/a2a")
    await set_columns(ctx, ids["FE"], runtime="external")
    token = await mint_token(ctx, ids["FE"])
    r = await discover(client, ids["FE"], ids["BE"], **bearer(token))
    assert (r.status_code, r.json()) == (503, {"error": "workspace URL failed safety check"})
    await set_columns(ctx, ids["BE"], url="http://example.com:9000/a2a")
    r = await discover(client, ids["FE"], ids["BE"], **bearer(token))
    assert r.json() == {"id": ids["BE"], "name": "BE", "url": "http://example.com:9000/a2a"}


async def test_discover_external_loopback_allowed_in_dev(client_factory: Any) -> None:
    client = await client_factory(MOLECULE_ENV="development")
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    await set_columns(ctx, ids["BE"], runtime="external", url="http://127.0.0.1:9000")
    await set_columns(ctx, ids["FE"], runtime="external")
    r = await discover(client, ids["FE"], ids["BE"])
    assert r.json() == {"id": ids["BE"], "name": "BE", "url": "http://127.0.0.1:9000"}


async def test_discover_caller_auth(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    fe, be = ids["FE"], ids["BE"]
    token, be_token = await mint_token(ctx, fe), await mint_token(ctx, be)
    r = await discover(client, fe, be)
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await discover(client, fe, be, **bearer(be_token))
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await discover(client, fe, be, **bearer(token))
    assert r.status_code == 200
    # BE has a token but FE is the caller: BE's token is irrelevant to FE's identity check
    r = await discover(client, ids["DevLead"], be)
    assert r.status_code == 200


async def test_discover_dev_hatch(client_factory: Any) -> None:
    dev = await client_factory(MOLECULE_ENV="development")
    ids = await build_tree(ctx_of(dev))
    await mint_token(ctx_of(dev), ids["FE"])
    assert (await discover(dev, ids["FE"], ids["BE"])).status_code == 200


@pytest.mark.parametrize(
    "overrides", [{"MOLECULE_ENV": "development", "ADMIN_TOKEN": "adm"}, {"MOLECULE_ENV": "production"}]
)
async def test_discover_dev_hatch_closed(client_factory: Any, overrides: dict[str, str]) -> None:
    client = await client_factory(**overrides)
    ids = await build_tree(ctx_of(client))
    await mint_token(ctx_of(client), ids["FE"])
    r = await discover(client, ids["FE"], ids["BE"])
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    # ADMIN_TOKEN is not a discovery credential
    r = await discover(client, ids["FE"], ids["BE"], **bearer("adm"))
    assert r.status_code == 401


async def test_discover_session_cookie(client_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await client_factory(MOLECULE_ORG_SLUG="acme")  # no CP_UPSTREAM_URL: presented, never valid
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    await mint_token(ctx, ids["FE"])
    r = await discover(client, ids["FE"], ids["BE"], Cookie="session=abc")
    assert (r.status_code, r.json()) == (401, {"error": "invalid session"})

    async def member(_: Any, cookie: str) -> tuple[bool, bool]:
        return cookie == "session=good", True

    monkeypatch.setattr(authz, "verify_cp_session", member)  # the discovery rule lives in authz now
    assert (await discover(client, ids["FE"], ids["BE"], Cookie="session=good")).status_code == 200


# ---- peers ----

PEER_KEYS = {"id", "name", "role", "tier", "status", "agent_card", "url", "parent_id", "active_tasks"}


async def test_peers_lists_siblings_children_parent(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    await set_columns(
        ctx, ids["SecAud"], agent_card={"name": "sec"}, url="http://localhost:1", active_tasks=2
    )
    r = await client.get(f"/registry/{ids['BE']}/peers")
    assert r.status_code == 200
    body = r.json()
    assert [p["name"] for p in body] == ["FE", "SecAud", "DevLead"]
    assert all(set(p) == PEER_KEYS for p in body)
    sec = body[1]
    assert sec == {
        "id": ids["SecAud"],
        "name": "SecAud",
        "role": "SecAud role",
        "tier": 3,
        "status": "online",
        "agent_card": {"name": "sec"},
        "url": "http://localhost:1",
        "parent_id": ids["BE"],
        "active_tasks": 2,
    }
    assert body[0]["url"] == "" and body[0]["agent_card"] is None
    # a root sees the other roots, then its children; no parent
    r = await client.get(f"/registry/{ids['PM']}/peers")
    assert [p["name"] for p in r.json()] == ["Ops", "DevLead", "Marketing"]
    assert r.json()[0]["parent_id"] is None


async def test_peers_filter_and_removed(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    r = await client.get(f"/registry/{ids['BE']}/peers", params={"q": "  secaud ROLE "})
    assert [p["name"] for p in r.json()] == ["SecAud"]
    r = await client.get(f"/registry/{ids['BE']}/peers", params={"q": "nothing-matches"})
    assert (r.status_code, r.text) == (200, "[]")
    await set_columns(ctx, ids["FE"], status="removed")
    await set_columns(ctx, ids["SecAud"], role="")
    r = await client.get(f"/registry/{ids['BE']}/peers")
    assert [(p["name"], p["role"]) for p in r.json()] == [("SecAud", None), ("DevLead", "DevLead role")]
    lonely = await add_workspace(ctx, "lonely", parent_id=ids["FE"])
    assert (await client.get(f"/registry/{lonely}/peers")).json() == []


async def test_peers_unknown_and_auth(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    r = await client.get(f"/registry/{new_id()}/peers")
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    ids = await build_tree(ctx)
    token = await mint_token(ctx, ids["BE"])
    fe_token = await mint_token(ctx, ids["FE"])
    r = await client.get(f"/registry/{ids['BE']}/peers")
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.get(f"/registry/{ids['BE']}/peers", headers=bearer(fe_token))
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await client.get(f"/registry/{ids['BE']}/peers", headers=bearer(token))
    assert r.status_code == 200


# ---- check-access ----


async def test_check_access_pairs(client: httpx.AsyncClient) -> None:
    ids = await build_tree(ctx_of(client))
    for pairs, expected in ((ALLOWED_PAIRS, True), (DENIED_PAIRS, False)):
        for caller, target in pairs:
            r = await client.post(
                "/registry/check-access", json={"caller_id": ids[caller], "target_id": ids[target]}
            )
            assert (r.status_code, r.json()) == (200, {"allowed": expected}), (caller, target)
    r = await client.post("/registry/check-access", json={"caller_id": ids["FE"], "target_id": new_id()})
    assert r.json() == {"allowed": False}
    r = await client.post("/registry/check-access", json={"caller_id": "x", "target_id": "x"})
    assert r.json() == {"allowed": True}  # rule 1: same id, no lookup


@pytest.mark.parametrize(
    "body", [{}, {"caller_id": "a"}, {"target_id": "b"}, {"caller_id": "", "target_id": "b"}]
)
async def test_check_access_bad_body(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await client.post("/registry/check-access", json=body)
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
