"""POST /registry/register and POST /registry/update-card (spec 03 §1.2, §1.4, §6, §7)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.registry_support import (
    add_workspace,
    bearer,
    ctx_of,
    mint_token,
    recorded_events,
    row,
    token_count,
)
from workspace_server.common.ids import new_id
from workspace_server.common.kv import internal_url_key, liveness_key, url_key
from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspaces
from workspace_server.registry import store

CARD = {"name": "Echo Agent", "skills": [{"id": "echo", "name": "Echo"}]}


def reg(ws_id: str, url: str = "http://localhost:9000", card: Any = CARD) -> dict[str, Any]:
    return {"id": ws_id, "url": url, "agent_card": card}


async def test_first_register_creates_row_event_keys_and_token(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = new_id()
    r = await client.post("/registry/register", json=reg(ws_id))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"status", "auth_token"} and body["status"] == "registered"
    assert len(body["auth_token"]) == 43
    w = await row(ctx, ws_id)
    assert (w.name, w.status, w.url, w.agent_card) == (ws_id, "online", "http://localhost:9000", CARD)
    assert w.last_heartbeat_at is not None
    assert await recorded_events(ctx, ws_id) == [
        ("WORKSPACE_ONLINE", {"url": "http://localhost:9000", "agent_card": CARD})
    ]
    assert await ctx.kv.get(liveness_key(ws_id)) == "online"
    assert await ctx.kv.get(url_key(ws_id)) == "http://localhost:9000"
    assert await ctx.kv.get(internal_url_key(ws_id)) == "http://localhost:9000"
    # the minted token authenticates the workspace's next register, and no second token is minted
    r = await client.post("/registry/register", json=reg(ws_id), headers=bearer(body["auth_token"]))
    assert (r.status_code, r.json()) == (200, {"status": "registered"})
    assert await token_count(ctx, ws_id) == 1


async def test_reregister_needs_the_workspace_token_and_writes_nothing_otherwise(
    client: httpx.AsyncClient,
) -> None:
    ctx = ctx_of(client)
    ws_id, other = new_id(), new_id()
    token = (await client.post("/registry/register", json=reg(ws_id))).json()["auth_token"]
    other_token = (await client.post("/registry/register", json=reg(other))).json()["auth_token"]
    before = await row(ctx, ws_id)
    events_before = await recorded_events(ctx, ws_id)

    r = await client.post("/registry/register", json=reg(ws_id, card={"name": "evil"}))
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.post(
        "/registry/register", json=reg(ws_id, card={"name": "evil"}), headers=bearer(other_token)
    )
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await client.post(
        "/registry/register", json=reg(ws_id, card={"name": "evil"}), headers=bearer("x" * 43)
    )
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})

    after = await row(ctx, ws_id)
    assert (after.url, after.agent_card, after.updated_at) == (
        before.url,
        before.agent_card,
        before.updated_at,
    )
    assert await recorded_events(ctx, ws_id) == events_before
    assert await token_count(ctx, ws_id) == 1
    r = await client.post("/registry/register", json=reg(ws_id), headers=bearer(token))
    assert r.status_code == 200


async def test_register_of_removed_row_does_not_resurrect_it(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "gone", status="removed", url="")
    r = await client.post("/registry/register", json=reg(ws_id))
    assert (r.status_code, r.json()) == (200, {"status": "registered"})
    w = await row(ctx, ws_id)
    assert (w.status, w.url, w.agent_card, w.last_heartbeat_at) == ("removed", "", None, None)
    assert await recorded_events(ctx, ws_id) == []
    assert await token_count(ctx, ws_id) == 0
    assert await ctx.kv.get(url_key(ws_id)) is None
    assert await ctx.kv.get(liveness_key(ws_id)) is None


@pytest.mark.parametrize(
    "status", ["provisioning", "offline", "failed", "paused", "hibernated", "awaiting_agent", "degraded"]
)
async def test_register_brings_any_live_row_online(client: httpx.AsyncClient, status: str) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "agent", status=status)
    r = await client.post("/registry/register", json=reg(ws_id))
    assert r.status_code == 200
    w = await row(ctx, ws_id)
    assert (w.status, w.name) == ("online", "agent")
    assert [e for e, _ in await recorded_events(ctx, ws_id)] == ["WORKSPACE_ONLINE"]


async def test_register_keeps_provisioner_host_url(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "docker", status="provisioning", url="http://127.0.0.1:32001")
    r = await client.post("/registry/register", json=reg(ws_id, "http://localhost:8000"))
    assert r.status_code == 200
    assert (await row(ctx, ws_id)).url == "http://127.0.0.1:32001"
    assert await ctx.kv.get(url_key(ws_id)) == "http://127.0.0.1:32001"
    assert await ctx.kv.get(internal_url_key(ws_id)) == "http://localhost:8000"
    assert await recorded_events(ctx, ws_id) == [
        ("WORKSPACE_ONLINE", {"url": "http://127.0.0.1:32001", "agent_card": CARD})
    ]


async def test_register_replaces_other_urls(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "remote", status="awaiting_agent", url="http://localhost:1")
    await client.post("/registry/register", json=reg(ws_id, "http://localhost:2", None))
    w = await row(ctx, ws_id)
    assert (w.url, w.agent_card) == ("http://localhost:2", None)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"url":"http://localhost:1","agent_card":{}}',
        b'{"id":"%(id)s","agent_card":{}}',
        b'{"id":"%(id)s","url":"http://localhost:1"}',
        b'{"id":"%(id)s","url":"","agent_card":{}}',
        b'{"id":"ws-123","url":"http://localhost:1","agent_card":{}}',
        b'{"id":123,"url":"http://localhost:1","agent_card":{}}',
    ],
)
async def test_register_bad_bodies_are_400(client: httpx.AsyncClient, body: bytes) -> None:
    ws_id = new_id()
    r = await client.post(
        "/registry/register",
        content=body.replace(b"%(id)s", ws_id.encode()),
        headers={"Content-Type": "application/json"},
    )
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    assert await row(ctx_of(client), ws_id) is None


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://localhost/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:169.254.169.254]/",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://10.0.0.5:8000",
        "http://172.31.0.2:8000",
        "http://192.168.1.2:8000",
        "http://100.64.0.1/",
        "http://203.0.113.7/",
        "http://224.0.0.1/",
        "http://0.0.0.0:8000/",
        "http://",
        "not a url",
    ],
)
async def test_register_rejects_unsafe_agent_urls(client: httpx.AsyncClient, url: str) -> None:
    ctx = ctx_of(client)
    ws_id = new_id()
    r = await client.post("/registry/register", json=reg(ws_id, url))
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    assert await row(ctx, ws_id) is None
    assert await recorded_events(ctx, ws_id) == []


async def test_saas_mode_accepts_private_agent_urls(client_factory: Any) -> None:
    client = await client_factory(MOLECULE_ORG_ID="org-1")
    ws_id = new_id()
    r = await client.post("/registry/register", json=reg(ws_id, "http://10.1.2.3:8000"))
    assert r.status_code == 200
    r = await client.post("/registry/register", json=reg(new_id(), "http://169.254.169.254/"))
    assert r.status_code == 400


async def test_dev_mode_does_not_relax_the_register_check(client_factory: Any) -> None:
    client = await client_factory(MOLECULE_ENV="development")
    r = await client.post("/registry/register", json=reg(new_id(), "http://127.0.0.1:8000"))
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})


async def test_register_db_error_is_opaque_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_: Any, **__: Any) -> str | None:
        raise sa.exc.OperationalError("INSERT ...", {}, Exception('pq: relation "workspaces" secret'))

    monkeypatch.setattr(store, "upsert_registration", boom)
    r = await client.post("/registry/register", json=reg(new_id()))
    assert r.status_code == 500
    assert r.text == '{"error":"registration failed"}'


async def test_upsert_sql_carries_the_removed_guard(client: httpx.AsyncClient) -> None:
    """A concurrent delete between gate and upsert must still win: the guard is in the statement."""
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "gone", status="removed")
    async with ctx.engine.begin() as conn:
        stored = await store.upsert_registration(conn, ws_id, "http://localhost:1", {}, utcnow())
        status = (
            await conn.execute(sa.select(workspaces.c.status).where(workspaces.c.id == ws_id))
        ).scalar_one()
    assert (stored, status) == (None, "removed")


# ---- update-card ----


async def test_update_card_updates_row_and_records_event(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, "agent", status="online")
    token = await mint_token(ctx, ws_id)
    card = {"name": "v2", "skills": []}
    r = await client.post("/registry/update-card", json={"workspace_id": ws_id, "agent_card": card})
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.post(
        "/registry/update-card", json={"workspace_id": ws_id, "agent_card": card}, headers=bearer(token)
    )
    assert (r.status_code, r.json()) == (200, {"status": "updated"})
    assert (await row(ctx, ws_id)).agent_card == card
    assert await recorded_events(ctx, ws_id) == [("AGENT_CARD_UPDATED", {"agent_card": card})]


async def test_update_card_bad_body_and_removed_row(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    r = await client.post("/registry/update-card", json={"workspace_id": new_id()})
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    ws_id = await add_workspace(ctx, "gone", status="removed")
    r = await client.post("/registry/update-card", json={"workspace_id": ws_id, "agent_card": {"a": 1}})
    assert r.status_code == 200
    assert (await row(ctx, ws_id)).agent_card is None
    assert await recorded_events(ctx, ws_id) == []
