"""Org API tokens: GET/POST /org/tokens, DELETE /org/tokens/:id, and the mint limiter."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tests.conftest import ClientFactory
from workspace_server.auth.tokens import hash_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import org_api_tokens
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
WARNING = "copy this token now; it will not be shown again"


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def org_rows(client: httpx.AsyncClient) -> dict[str, sa.Row]:
    async with client.app.state.ctx.engine.connect() as conn:  # type: ignore[attr-defined]
        return {r.id: r for r in (await conn.execute(sa.select(org_api_tokens))).all()}


async def test_mint_list_revoke(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await client.post("/org/tokens", json={"name": "ci"}, headers=bearer(ADMIN))
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["id", "prefix", "name", "auth_token", "warning"]
    assert body["name"] == "ci" and body["warning"] == WARNING
    assert body["prefix"] == body["auth_token"][:8] and len(body["auth_token"]) == 43
    row = (await org_rows(client))[body["id"]]
    assert bytes(row.token_hash) == hash_token(body["auth_token"])
    assert (row.created_by, row.org_id, row.name) == ("admin-token", None, "ci")

    # unnamed: no name key; an empty body and a non-JSON body are both fine
    r2 = await client.post("/org/tokens", headers=bearer(ADMIN))
    assert r2.status_code == 200 and "name" not in r2.json()
    r3 = await client.post("/org/tokens", content=b"{not json", headers=bearer(ADMIN))
    assert r3.status_code == 200 and "name" not in r3.json()

    r = await client.get("/org/tokens", headers=bearer(ADMIN))
    assert r.status_code == 200
    listing = r.json()
    assert listing["count"] == 3
    assert [t["id"] for t in listing["tokens"]] == [r3.json()["id"], r2.json()["id"], body["id"]]
    named = listing["tokens"][2]
    assert set(named) == {"id", "prefix", "name", "created_by", "created_at"}  # empty fields omitted
    assert named["created_by"] == "admin-token"

    # the new token is itself an admin credential; using it sets last_used_at
    r = await client.get("/org/tokens", headers=bearer(body["auth_token"]))
    assert r.status_code == 200
    assert "last_used_at" in next(t for t in r.json()["tokens"] if t["id"] == body["id"])

    r = await client.delete(f"/org/tokens/{body['id']}", headers=bearer(ADMIN))
    assert r.status_code == 200
    assert r.json() == {"revoked": body["id"]}
    assert (await org_rows(client))[body["id"]].revoked_at is not None
    r = await client.get("/org/tokens", headers=bearer(body["auth_token"]))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid admin auth token"}
    for again in (body["id"], new_id(), "nope"):
        r = await client.delete(f"/org/tokens/{again}", headers=bearer(ADMIN))
        assert r.status_code == 404
        assert r.json() == {"error": "token not found or already revoked"}


async def test_name_too_long(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await client.post("/org/tokens", json={"name": "x" * 101}, headers=bearer(ADMIN))
    assert r.status_code == 400
    assert r.json() == {"error": "name too long (max 100 chars)"}
    assert await org_rows(client) == {}
    r = await client.post("/org/tokens", json={"name": "x" * 100}, headers=bearer(ADMIN))
    assert r.status_code == 200


async def test_provenance_org_token_copies_org_id(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    org_ws = new_id()
    async with client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        await insert_workspace(conn, id=org_ws, name="org root")
    parent = (await client.post("/org/tokens", headers=bearer(ADMIN))).json()
    # anchor the parent token to an org, as a CP-provisioned token would be
    async with client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            sa.update(org_api_tokens).where(org_api_tokens.c.id == parent["id"]).values(org_id=org_ws)
        )
    # a body org_id is ignored: only the minting token's anchor is copied
    child = await client.post(
        "/org/tokens", json={"name": "child", "org_id": new_id()}, headers=bearer(parent["auth_token"])
    )
    assert child.status_code == 200
    row = (await org_rows(client))[child.json()["id"]]
    assert row.created_by == f"org-token:{parent['prefix']}"
    assert row.org_id == org_ws

    cookie = await client.post("/org/tokens", headers={**bearer(ADMIN), "Cookie": "x=1"})
    assert (await org_rows(client))[cookie.json()["id"]].created_by == "session"
    listed = {t["id"]: t for t in (await client.get("/org/tokens", headers=bearer(ADMIN))).json()["tokens"]}
    assert listed[child.json()["id"]]["org_id"] == org_ws
    assert listed[parent["id"]]["org_id"] == org_ws
    assert "org_id" not in listed[cookie.json()["id"]]


async def test_mint_limiter_ten_per_hour(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    for _ in range(10):
        assert (await client.post("/org/tokens", headers=bearer(ADMIN))).status_code == 200
    r = await client.post("/org/tokens", headers=bearer(ADMIN))
    assert r.status_code == 429
    body = r.json()
    assert body["error"] == "rate limit exceeded"
    assert isinstance(body["retry_after"], int) and 0 < body["retry_after"] <= 3600
    assert r.headers["Retry-After"] == str(body["retry_after"])
    assert len(await org_rows(client)) == 10
    # listing and revoking are not limited
    assert (await client.get("/org/tokens", headers=bearer(ADMIN))).status_code == 200


async def test_mint_limiter_counts_only_authenticated_requests(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    for _ in range(12):
        r = await client.post("/org/tokens", headers=bearer("wrong"))
        assert r.status_code == 401
    assert (await client.post("/org/tokens", headers=bearer(ADMIN))).status_code == 200


async def test_mint_limiter_off_in_dev_mode(client_factory: ClientFactory) -> None:
    client = await client_factory(MOLECULE_ENV="development")
    for _ in range(12):
        assert (await client.post("/org/tokens")).status_code == 200
    assert len(await org_rows(client)) == 12


async def test_org_routes_need_admin_once_tokens_exist(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    for method, path in (
        ("GET", "/org/tokens"),
        ("POST", "/org/tokens"),
        ("DELETE", f"/org/tokens/{new_id()}"),
    ):
        r = await client.request(method, path)
        assert r.status_code == 401
        assert r.json() == {"error": "admin auth required"}
    assert await org_rows(client) == {}
