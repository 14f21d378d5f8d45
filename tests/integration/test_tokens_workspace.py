"""Workspace token routes: GET/POST /workspaces/:id/tokens, DELETE /workspaces/:id/tokens/:tokenId."""

from __future__ import annotations

import asyncio

import httpx
import sqlalchemy as sa

from tests.conftest import ClientFactory
from workspace_server.auth.tokens import hash_token, issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import workspace_auth_tokens
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"


async def make_ws(client: httpx.AsyncClient, status: str = "online") -> str:
    ws_id = new_id()
    async with client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        await insert_workspace(conn, id=ws_id, name=f"ws-{ws_id[:6]}", status=status)
    return ws_id


async def issue(client: httpx.AsyncClient, ws_id: str) -> str:
    async with client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        return await issue_workspace_token(conn, ws_id)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def token_rows(client: httpx.AsyncClient, ws_id: str) -> list[sa.Row]:
    t = workspace_auth_tokens
    async with client.app.state.ctx.engine.connect() as conn:  # type: ignore[attr-defined]
        return list((await conn.execute(sa.select(t).where(t.c.workspace_id == ws_id))).all())


async def test_create_list_revoke_round_trip(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = await make_ws(client)
    first = await issue(client, ws)

    r = await client.post(f"/workspaces/{ws}/tokens", headers=bearer(first))
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"auth_token", "workspace_id", "message"}
    assert body["workspace_id"] == ws
    assert body["message"] == "Save this token now — it cannot be retrieved again."
    new_tok = body["auth_token"]
    assert len(new_tok) == 43 and "=" not in new_tok
    # only the hash is stored, and the new token works on this workspace
    rows = await token_rows(client, ws)
    assert {bytes(r.token_hash) for r in rows} == {hash_token(first), hash_token(new_tok)}
    assert {r.prefix for r in rows} == {first[:8], new_tok[:8]}

    r = await client.get(f"/workspaces/{ws}/tokens", headers=bearer(new_tok))
    assert r.status_code == 200
    listing = r.json()
    assert listing["count"] == 2
    assert {t["prefix"] for t in listing["tokens"]} == {first[:8], new_tok[:8]}
    for item in listing["tokens"]:
        assert set(item) == {"id", "prefix", "created_at", "last_used_at"}
        assert item["created_at"].endswith("Z")
    used = {t["prefix"]: t for t in listing["tokens"]}
    assert used[new_tok[:8]]["last_used_at"] is not None  # it authenticated this very request

    victim = used[first[:8]]["id"]
    r = await client.delete(f"/workspaces/{ws}/tokens/{victim}", headers=bearer(new_tok))
    assert r.status_code == 200
    assert r.json() == {"status": "revoked"}
    # revoked token no longer authenticates; a second revoke is 404
    r = await client.get(f"/workspaces/{ws}/tokens", headers=bearer(first))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid workspace auth token"}
    r = await client.delete(f"/workspaces/{ws}/tokens/{victim}", headers=bearer(new_tok))
    assert r.status_code == 404
    assert r.json() == {"error": "token not found or already revoked"}
    r = await client.get(f"/workspaces/{ws}/tokens", headers=bearer(new_tok))
    assert r.json()["count"] == 1


async def test_revoke_token_of_another_workspace_is_404_and_keeps_it(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    a, b = await make_ws(client), await make_ws(client)
    tok_b = await issue(client, b)
    b_id = (await token_rows(client, b))[0].id

    r = await client.delete(f"/workspaces/{a}/tokens/{b_id}", headers=bearer(ADMIN))
    assert r.status_code == 404
    assert r.json() == {"error": "token not found or already revoked"}
    assert (await token_rows(client, b))[0].revoked_at is None
    r = await client.get(f"/workspaces/{b}/tokens", headers=bearer(tok_b))
    assert r.status_code == 200
    for bad in ("not-a-uuid", new_id()):
        r = await client.delete(f"/workspaces/{a}/tokens/{bad}", headers=bearer(ADMIN))
        assert r.status_code == 404


async def test_fifty_live_tokens_cap(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = await make_ws(client)
    for _ in range(49):
        await issue(client, ws)
    r = await client.post(f"/workspaces/{ws}/tokens", headers=bearer(ADMIN))
    assert r.status_code == 201  # the 50th
    r = await client.post(f"/workspaces/{ws}/tokens", headers=bearer(ADMIN))
    assert r.status_code == 429
    assert r.json() == {"error": "maximum 50 active tokens per workspace"}
    assert len(await token_rows(client, ws)) == 50

    # revoking one frees a slot
    listing = (await client.get(f"/workspaces/{ws}/tokens?limit=1", headers=bearer(ADMIN))).json()
    await client.delete(f"/workspaces/{ws}/tokens/{listing['tokens'][0]['id']}", headers=bearer(ADMIN))
    r = await client.post(f"/workspaces/{ws}/tokens", headers=bearer(ADMIN))
    assert r.status_code == 201


async def test_no_tokens_minted_for_unknown_or_removed_workspace(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    removed = await make_ws(client, status="removed")
    for ws in (new_id(), removed):
        r = await client.post(f"/workspaces/{ws}/tokens", headers=bearer(ADMIN))
        assert r.status_code == 404
        assert r.json() == {"error": "workspace not found"}
        assert await token_rows(client, ws) == []
    r = await client.post("/workspaces/not-a-uuid/tokens", headers=bearer(ADMIN))
    assert r.status_code == 400
    assert r.json() == {"error": "invalid workspace ID"}


async def test_list_paging_and_bad_params_fall_back(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = await make_ws(client)
    for _ in range(3):
        await issue(client, ws)

    async def count(query: str) -> int:
        r = await client.get(f"/workspaces/{ws}/tokens{query}", headers=bearer(ADMIN))
        assert r.status_code == 200
        body = r.json()
        assert body["count"] == len(body["tokens"])
        return int(body["count"])

    assert await count("") == 3
    assert await count("?limit=2") == 2
    assert await count("?limit=2&offset=2") == 1
    assert await count("?offset=5") == 0
    # out-of-range or junk values fall back to the defaults (50 / 0) instead of erroring
    assert await count("?limit=0") == 3
    assert await count("?limit=201") == 3
    assert await count("?limit=abc&offset=-1") == 3
    # newest first
    body = (await client.get(f"/workspaces/{ws}/tokens", headers=bearer(ADMIN))).json()
    stamps = [t["created_at"] for t in body["tokens"]]
    assert stamps == sorted(stamps, reverse=True)
    # an unknown (well-formed) workspace just has no tokens
    r = await client.get(f"/workspaces/{new_id()}/tokens", headers=bearer(ADMIN))
    assert r.json() == {"tokens": [], "count": 0}


async def test_token_routes_require_workspace_auth(client: httpx.AsyncClient) -> None:
    ws = await make_ws(client)
    other = await make_ws(client)
    other_tok = await issue(client, other)
    r = await client.post(f"/workspaces/{ws}/tokens")
    assert r.status_code == 401
    assert r.json() == {"error": "missing workspace auth token"}
    r = await client.post(f"/workspaces/{ws}/tokens", headers=bearer(other_tok))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid workspace auth token"}
    assert await token_rows(client, ws) == []


async def test_concurrent_mints_never_error_and_respect_the_cap_on_postgres(
    client_factory: ClientFactory,
) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = await make_ws(client)
    for _ in range(47):
        await issue(client, ws)
    results = await asyncio.gather(
        *(client.post(f"/workspaces/{ws}/tokens", headers=bearer(ADMIN)) for _ in range(6))
    )
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {201, 429}
    live = [r for r in await token_rows(client, ws) if r.revoked_at is None]
    assert len(live) == 47 + codes.count(201)
    if client.app.state.ctx.engine.dialect.name == "postgresql":  # type: ignore[attr-defined]
        # the workspace row lock serialises count-then-insert: exactly three fit under 50
        assert codes == [201, 201, 201, 429, 429, 429]
