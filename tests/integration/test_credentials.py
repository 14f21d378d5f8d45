"""Issue 11 §1 (credentials) and the Origin bullet of §3, on SQLite and Postgres.

Production mode (ADMIN_TOKEN set, or MOLECULE_ENV=production): no workspace is reachable without a
credential. Every create path mints the workspace's token, `/registry/register` never mints for an
unauthenticated caller and never lets a caller who is not the workspace move its URL, and an Origin header
is not a credential. The open bootstrap mode (neither setting) keeps the reference's behaviour.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import AgentStarter, ClientFactory, LiveServer
from tests.integration.orchestrator_support import (
    PlatformFactory,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from workspace_server.app import OPEN_BOOTSTRAP_WARNING
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import workspace_auth_tokens, workspaces
from workspace_server.tokens import store as token_store
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
AGENT_URL = "http://localhost:9/agent"
EVIL_URL = "http://localhost:9/evil"
VIEWPORT = {"x": 1, "y": 2, "zoom": 1.5}


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def ctx_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


async def ws_url(client: httpx.AsyncClient, ws_id: str) -> str | None:
    async with ctx_of(client).engine.connect() as conn:
        row = (await conn.execute(sa.select(workspaces.c.url).where(workspaces.c.id == ws_id))).one()
    return row.url  # type: ignore[no-any-return]


async def live_tokens(client: httpx.AsyncClient, ws_id: str) -> int:
    t = workspace_auth_tokens
    query = sa.select(sa.func.count()).where(t.c.workspace_id == ws_id, t.c.revoked_at.is_(None))
    async with ctx_of(client).engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def tokenless_ws(client: httpx.AsyncClient, url: str = AGENT_URL) -> str:
    """A workspace row with no token (a row from before this change, or one whose mint failed)."""
    ws_id = new_id()
    async with ctx_of(client).engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name="legacy", status="online", runtime="external", url=url)
    return ws_id


async def org_token(client: httpx.AsyncClient) -> str:
    async with ctx_of(client).engine.begin() as conn:
        _, tok = await token_store.insert_org_token(conn, name="ops", created_by="admin-token", org_id=None)
    return tok


def register_body(ws_id: str, url: str = EVIL_URL) -> dict[str, Any]:
    return {"id": ws_id, "url": url, "agent_card": {"name": "x"}}


# (settings, admin headers for admin routes): ADMIN_TOKEN set, or MOLECULE_ENV=production without one
PRODUCTION = [
    pytest.param({"ADMIN_TOKEN": ADMIN}, id="admin-token"),
    pytest.param({"MOLECULE_ENV": "production"}, id="molecule-env-production"),
]


async def _admin_headers(client: httpx.AsyncClient, settings: dict[str, str]) -> dict[str, str]:
    return bearer(ADMIN) if "ADMIN_TOKEN" in settings else bearer(await org_token(client))


# ---------------------------------------------------------------- the takeover of the issue


@pytest.mark.parametrize("settings", PRODUCTION)
async def test_anonymous_takeover_of_an_external_workspace_is_refused(
    client_factory: ClientFactory, settings: dict[str, str]
) -> None:
    client = await client_factory(**settings)
    admin = await _admin_headers(client, settings)
    r = await client.post(
        "/workspaces", json={"name": "ext", "runtime": "external", "url": AGENT_URL}, headers=admin
    )
    assert r.status_code == 201, r.text
    created = r.json()
    ws_id = created["id"]
    assert (created["external"], created["status"]) == (True, "online")
    conn = created["connection"]  # the token, shown once, as for an external workspace without url
    token = conn["auth_token"]
    assert len(token) == 43 and conn["workspace_id"] == ws_id
    assert conn["registry_endpoint"].endswith("/registry/register")
    assert await live_tokens(client, ws_id) == 1

    # the unauthenticated register of the issue: refused, no token, the url stays
    r = await client.post("/registry/register", json=register_body(ws_id))
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.post("/registry/register", json=register_body(ws_id), headers=bearer("x" * 43))
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    assert await ws_url(client, ws_id) == AGENT_URL
    assert await live_tokens(client, ws_id) == 1
    r = await client.get(f"/workspaces/{ws_id}/secrets/values")
    assert r.status_code == 401

    # the agent, with the token from the connection block, registers and moves its own url
    r = await client.post(
        "/registry/register", json=register_body(ws_id, AGENT_URL + "2"), headers=bearer(token)
    )
    assert (r.status_code, r.json()) == (200, {"status": "registered"})
    assert await ws_url(client, ws_id) == AGENT_URL + "2"
    r = await client.get(f"/workspaces/{ws_id}/secrets/values", headers=bearer(token))
    assert (r.status_code, r.json()) == (200, {})


@pytest.mark.parametrize("settings", PRODUCTION)
async def test_external_without_url_mints_once_in_production(
    client_factory: ClientFactory, settings: dict[str, str]
) -> None:
    client = await client_factory(**settings)
    admin = await _admin_headers(client, settings)
    r = await client.post("/workspaces", json={"name": "ext", "external": True}, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    assert sorted(body) == ["connection", "external", "id", "status"]
    assert body["status"] == "awaiting_agent" and len(body["connection"]["auth_token"]) == 43
    r = await client.post("/registry/register", json=register_body(body["id"], AGENT_URL))
    assert r.status_code == 401
    r = await client.post(
        "/registry/register",
        json=register_body(body["id"], AGENT_URL),
        headers=bearer(body["connection"]["auth_token"]),
    )
    assert (r.status_code, r.json()) == (200, {"status": "registered"})
    assert await live_tokens(client, body["id"]) == 1


# ---------------------------------------------------------------- a workspace that never got a token


@pytest.mark.parametrize("settings", PRODUCTION)
async def test_tokenless_workspace_is_unreachable_without_a_credential(
    client_factory: ClientFactory, settings: dict[str, str]
) -> None:
    client = await client_factory(**settings)
    ws_id = await tokenless_ws(client)
    other = await tokenless_ws(client)
    async with ctx_of(client).engine.begin() as conn:
        other_tok = await issue_workspace_token(conn, other)

    for headers in ({}, bearer("nope"), bearer(other_tok)):
        r = await client.post("/registry/register", json=register_body(ws_id), headers=headers)
        assert r.status_code == 401, headers
        assert "auth_token" not in r.text
        hb = {"workspace_id": ws_id, "uptime_seconds": 5}
        assert (await client.post("/registry/heartbeat", json=hb, headers=headers)).status_code == 401
        card = {"workspace_id": ws_id, "agent_card": {"name": "evil"}}
        assert (await client.post("/registry/update-card", json=card, headers=headers)).status_code == 401
        r = await client.get(f"/registry/discover/{other}", headers={"X-Workspace-ID": ws_id, **headers})
        assert r.status_code == 401
        r = await client.get(f"/registry/{ws_id}/peers", headers=headers)
        assert r.status_code == 401
        r = await client.post(
            f"/workspaces/{other}/a2a",
            json={"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}},
            headers={"X-Workspace-ID": ws_id, **headers},
        )
        assert r.status_code == 401, r.text
    assert await ws_url(client, ws_id) == AGENT_URL
    assert await live_tokens(client, ws_id) == 0
    async with ctx_of(client).engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(workspaces.c.agent_card, workspaces.c.uptime_seconds).where(
                    workspaces.c.id == ws_id
                )
            )
        ).one()
    assert row.agent_card is None and not row.uptime_seconds


@pytest.mark.parametrize("settings", PRODUCTION)
async def test_admin_register_mints_for_a_tokenless_workspace(
    client_factory: ClientFactory, settings: dict[str, str]
) -> None:
    client = await client_factory(**settings)
    admin = await _admin_headers(client, settings)
    ws_id = await tokenless_ws(client)
    r = await client.post("/registry/register", json=register_body(ws_id, AGENT_URL + "/new"), headers=admin)
    assert r.status_code == 200, r.text
    token = r.json()["auth_token"]
    assert len(token) == 43 and await live_tokens(client, ws_id) == 1
    assert await ws_url(client, ws_id) == AGENT_URL + "/new"
    # from now on the workspace is its token's: the admin bearer is not a workspace token (reference)
    r = await client.post("/registry/register", json=register_body(ws_id), headers=admin)
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await client.post("/registry/heartbeat", json={"workspace_id": ws_id}, headers=bearer(token))
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("settings", PRODUCTION)
async def test_operator_gives_a_token_with_post_tokens(
    client_factory: ClientFactory, settings: dict[str, str]
) -> None:
    """docs/decisions.md: an agent that never got a token gets one from POST /workspaces/:id/tokens."""
    client = await client_factory(**settings)
    admin = await _admin_headers(client, settings)
    ws_id = await tokenless_ws(client)
    r = await client.post(f"/workspaces/{ws_id}/tokens", headers=admin)
    assert r.status_code == 201, r.text
    token = r.json()["auth_token"]
    r = await client.post(
        "/registry/register", json=register_body(ws_id, AGENT_URL + "/x"), headers=bearer(token)
    )
    assert (r.status_code, r.json()) == (200, {"status": "registered"})
    assert await ws_url(client, ws_id) == AGENT_URL + "/x"
    r = await client.post("/registry/heartbeat", json={"workspace_id": ws_id}, headers=bearer(token))
    assert r.status_code == 200
    r = await client.post(f"/workspaces/{ws_id}/tokens")
    assert r.status_code == 401


# ---------------------------------------------------------------- the open bootstrap mode


async def test_open_bootstrap_keeps_the_reference_flow(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="workspace_server.app"):
        client = await client_factory()
    assert [r.getMessage() for r in caplog.records if r.name == "workspace_server.app"] == [
        OPEN_BOOTSTRAP_WARNING
    ]
    r = await client.post("/workspaces", json={"name": "ext", "runtime": "external", "url": AGENT_URL})
    assert r.status_code == 201
    assert sorted(r.json()) == ["external", "id", "status"]  # the reference's body: no token yet
    ws_id = r.json()["id"]
    # trust on first use: the first register of a tokenless workspace is the workspace
    r = await client.post("/registry/register", json=register_body(ws_id, AGENT_URL + "/first"))
    assert r.status_code == 200 and len(r.json()["auth_token"]) == 43
    assert await ws_url(client, ws_id) == AGENT_URL + "/first"
    r = await client.post("/registry/register", json=register_body(ws_id))
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    assert await ws_url(client, ws_id) == AGENT_URL + "/first"


@pytest.mark.parametrize("settings", PRODUCTION)
async def test_no_open_bootstrap_warning_in_production(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, settings: dict[str, str]
) -> None:
    with caplog.at_level(logging.WARNING, logger="workspace_server.app"):
        await client_factory(**settings)
    assert OPEN_BOOTSTRAP_WARNING not in [r.getMessage() for r in caplog.records]


# ---------------------------------------------------------------- Origin is not a credential


async def test_viewport_with_admin_token_needs_a_bearer(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    # a fresh server (no workspace token anywhere): still closed
    r = await client.put("/canvas/viewport", json=VIEWPORT)
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    for origin in ("http://localhost:3000", "http://localhost:3001"):
        r = await client.put("/canvas/viewport", json=VIEWPORT, headers={"Origin": origin})
        assert (r.status_code, r.json()) == (401, {"error": "admin auth required"}), origin
    # the reference canvas sends NEXT_PUBLIC_ADMIN_TOKEN as a bearer
    r = await client.put(
        "/canvas/viewport", json=VIEWPORT, headers={**bearer(ADMIN), "Origin": "http://localhost:3000"}
    )
    assert r.status_code == 200
    saved = (await client.get("/canvas/viewport")).json()
    assert (saved["x"], saved["y"], saved["zoom"]) == (1, 2, 1.5)


async def test_viewport_in_production_ignores_origin(client_factory: ClientFactory) -> None:
    client = await client_factory(MOLECULE_ENV="production", CORS_ORIGINS="https://canvas.example.com")
    ws_id = await tokenless_ws(client)
    async with ctx_of(client).engine.begin() as conn:
        tok = await issue_workspace_token(conn, ws_id)
    r = await client.put("/canvas/viewport", json=VIEWPORT, headers={"Origin": "https://canvas.example.com"})
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    assert (await client.put("/canvas/viewport", json=VIEWPORT, headers=bearer(tok))).status_code == 200


async def test_viewport_open_bootstrap_keeps_origin(client_factory: ClientFactory) -> None:
    client = await client_factory()
    assert (await client.put("/canvas/viewport", json=VIEWPORT)).status_code == 200  # no token yet
    ws_id = await tokenless_ws(client)
    async with ctx_of(client).engine.begin() as conn:
        await issue_workspace_token(conn, ws_id)
    assert (await client.put("/canvas/viewport", json=VIEWPORT)).status_code == 401
    r = await client.put("/canvas/viewport", json=VIEWPORT, headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200


# ---------------------------------------------------------------- provisioned workspaces


async def test_provisioned_agent_in_saas_production_gets_its_token_written(
    platform_factory: PlatformFactory,
) -> None:
    """SaaS mode used to revoke only and let the agent's first register mint; in production mode that
    register is refused, so the orchestrator writes the token (process backend, ADMIN_TOKEN set)."""
    p = await platform_factory(backend="process", MOLECULE_DEPLOY_MODE="saas")
    wid = await p.create()
    await p.wait_status(wid, "online")
    r = await p.http.get(f"/workspaces/{wid}/tokens")  # the server's own loop: ask it over HTTP
    assert r.status_code == 200 and r.json()["count"] == 1
    r = await p.http.post("/registry/register", json=register_body(wid), headers={"Authorization": ""})
    assert r.status_code == 401


# ---------------------------------------------------------------- the reference agent in production mode


async def test_reference_agent_with_the_connection_token_in_production(
    live_server_factory: Callable[..., LiveServer], reference_agents: AgentStarter
) -> None:
    """An external reference agent (`python -m molecule_agent`) given the create response's token in its
    `.auth_token` comes online; it picks the file up on its next register retry if it raced ahead."""
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    async with httpx.AsyncClient(base_url=srv.url, timeout=10, headers=bearer(ADMIN)) as c:
        r = await c.post("/workspaces", json={"name": "Echo Agent", "external": True})
        assert r.status_code == 201, r.text
        ws_id, token = r.json()["id"], r.json()["connection"]["auth_token"]
        cfg_dir = reference_agents(ws_id, srv.url)
        (cfg_dir / ".auth_token").write_text(token, encoding="utf-8")
        deadline = asyncio.get_running_loop().time() + 30
        while (await c.get(f"/workspaces/{ws_id}")).json()["status"] != "online":
            assert asyncio.get_running_loop().time() < deadline, "agent did not come online"
            await asyncio.sleep(0.2)
        assert (cfg_dir / ".auth_token").read_text().strip() == token  # no second token was minted
        r = await c.get(f"/workspaces/{ws_id}/tokens")
        assert r.json()["count"] == 1


async def test_org_import_returns_an_external_node_token(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    """Org import creates through the same path; the one-time token must reach the operator."""
    org = tmp_path / "org-templates" / "ext"
    org.mkdir(parents=True)
    (tmp_path / "configs").mkdir(exist_ok=True)
    doc = {"name": "Ext", "workspaces": [{"name": "Remote", "external": True, "url": AGENT_URL}]}
    (org / "org.yaml").write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await client.post("/org/import", json={"dir": "ext"}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    (entry,) = r.json()["workspaces"]
    token = entry["connection"]["auth_token"]
    assert entry["connection"]["workspace_id"] == entry["id"] and len(token) == 43
    r = await client.post("/registry/register", json=register_body(entry["id"]))
    assert r.status_code == 401
    r = await client.post("/registry/register", json=register_body(entry["id"]), headers=bearer(token))
    assert (r.status_code, r.json()) == (200, {"status": "registered"})
