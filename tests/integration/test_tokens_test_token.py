"""GET /admin/workspaces/:id/test-token: enablement, ADMIN_TOKEN gate (#112), unknown workspace."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ClientFactory
from workspace_server.common.ids import new_id
from workspace_server.tokens import store
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"


async def make_ws(client: httpx.AsyncClient, status: str = "online") -> str:
    ws_id = new_id()
    async with client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        await insert_workspace(conn, id=ws_id, name="t", status=status)
    return ws_id


async def test_open_outside_production_and_token_works(client: httpx.AsyncClient) -> None:
    ws = await make_ws(client)
    r = await client.get(f"/admin/workspaces/{ws}/test-token")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"auth_token", "workspace_id"} and body["workspace_id"] == ws
    # the minted token authenticates as that workspace
    r = await client.get(
        f"/workspaces/{ws}/tokens", headers={"Authorization": f"Bearer {body['auth_token']}"}
    )
    assert r.status_code == 200 and r.json()["count"] == 1


@pytest.mark.parametrize("env", ["production", "prod", "PRODUCTION"])
async def test_hidden_in_production(client_factory: ClientFactory, env: str) -> None:
    client = await client_factory(MOLECULE_ENV=env)
    ws = await make_ws(client)
    r = await client.get(f"/admin/workspaces/{ws}/test-token")
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}


async def test_enable_flag_overrides_production(client_factory: ClientFactory) -> None:
    client = await client_factory(MOLECULE_ENV="production", MOLECULE_ENABLE_TEST_TOKENS="1")
    ws = await make_ws(client)
    assert (await client.get(f"/admin/workspaces/{ws}/test-token")).status_code == 200


async def test_admin_token_required_when_set(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = await make_ws(client)
    # an org token is a full admin elsewhere, but not here (#112)
    async with client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        _, org_tok = await store.insert_org_token(conn, name=None, created_by=None, org_id=None)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {org_tok}"}):
        r = await client.get(f"/admin/workspaces/{ws}/test-token", headers=headers)
        assert r.status_code == 401
        assert r.json() == {"error": "admin auth required"}
    r = await client.get(f"/admin/workspaces/{ws}/test-token", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    # the reference strips an optional `Bearer ` prefix, so the bare secret also passes
    r = await client.get(f"/admin/workspaces/{ws}/test-token", headers={"Authorization": ADMIN})
    assert r.status_code == 200


async def test_unknown_or_removed_workspace(client: httpx.AsyncClient) -> None:
    removed = await make_ws(client, status="removed")
    for ws in (new_id(), removed, "not-a-uuid"):
        r = await client.get(f"/admin/workspaces/{ws}/test-token")
        assert r.status_code == 404
        assert r.json() == {"error": "workspace not found"}
