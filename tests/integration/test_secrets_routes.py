"""Secrets routes (spec 05 §1): shapes, status codes, exact errors and the auth rules of each route."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ClientFactory
from tests.integration.secrets_support import (
    ADMIN_H,
    KEY_A,
    UNKNOWN,
    admin_client,
    bearer,
    global_rows,
    issue,
    make_ws,
    ws_rows,
)

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def strip_times(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    for e in entries:
        assert RFC3339.match(str(e.pop("created_at"))) and RFC3339.match(str(e.pop("updated_at")))
    return entries


# ---- workspace scope ----


async def test_set_list_delete_workspace_secret(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    r = await client.post(f"/workspaces/{ws}/secrets", json={"key": "B_KEY", "value": "b"}, headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, '{"key":"B_KEY","status":"saved"}')
    r = await client.put(f"/workspaces/{ws}/secrets", json={"key": "A_KEY", "value": "a"}, headers=ADMIN_H)
    assert (r.status_code, r.json()) == (200, {"key": "A_KEY", "status": "saved"})
    await client.post("/settings/secrets", json={"key": "A_KEY", "value": "global-a"}, headers=ADMIN_H)
    await client.post("/settings/secrets", json={"key": "G_KEY", "value": "g"}, headers=ADMIN_H)

    r = await client.get(f"/workspaces/{ws}/secrets", headers=ADMIN_H)
    assert r.status_code == 200
    assert "global-a" not in r.text and '"value"' not in r.text
    assert strip_times(r.json()) == [
        {"has_value": True, "key": "A_KEY", "scope": "workspace"},
        {"has_value": True, "key": "B_KEY", "scope": "workspace"},
        {"has_value": True, "key": "G_KEY", "scope": "global"},  # A_KEY's global is overridden
    ]

    r = await client.delete(f"/workspaces/{ws}/secrets/B_KEY", headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, '{"key":"B_KEY","status":"deleted"}')
    assert [row.key for row in await ws_rows(client, ws)] == ["A_KEY"]
    r = await client.delete(f"/workspaces/{ws}/secrets/B_KEY", headers=ADMIN_H)
    assert (r.status_code, r.json()) == (404, {"error": "secret not found"})


async def test_upsert_keeps_one_row_and_created_at(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "one"}, headers=ADMIN_H)
    (first,) = await ws_rows(client, ws)
    await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "two"}, headers=ADMIN_H)
    (second,) = await ws_rows(client, ws)
    assert (second.id, second.created_at) == (first.id, first.created_at)
    assert second.updated_at >= first.updated_at
    r = await client.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    assert r.json() == {"K": "two"}


async def test_list_is_empty_array_and_does_not_check_existence(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    r = await client.get(f"/workspaces/{UNKNOWN}/secrets", headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, "[]")


async def test_key_with_slash_can_be_deleted(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    await client.post(f"/workspaces/{ws}/secrets", json={"key": "a/b", "value": "v"}, headers=ADMIN_H)
    r = await client.delete(f"/workspaces/{ws}/secrets/a/b", headers=ADMIN_H)
    assert (r.status_code, r.json()) == (200, {"key": "a/b", "status": "deleted"})


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'"x"',
        b'{"key":"K"}',
        b'{"value":"v"}',
        b'{"key":"","value":"v"}',
        b'{"key":"K","value":""}',
        b'{"key":"K","value":5}',
        b'{"key":["K"],"value":"v"}',
        b'{"key":"K\\u0000","value":"v"}',
        b'{"key":"K","value":"\\ud800"}',
    ],
)
async def test_set_rejects_bad_bodies(client_factory: ClientFactory, body: bytes) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    for path in (f"/workspaces/{ws}/secrets", "/settings/secrets", "/admin/secrets"):
        r = await client.post(path, content=body, headers={**ADMIN_H, "Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (400, {"error": "invalid request body"}), path
    assert await ws_rows(client, ws) == [] and await global_rows(client) == []


@pytest.mark.parametrize("bad", ["not-a-uuid", "123E4567-E89B-12D3-A456-426614174000", "ws-123"])
async def test_non_uuid_workspace_id_is_400(client_factory: ClientFactory, bad: str) -> None:
    client = await admin_client(client_factory)
    calls = [
        ("GET", f"/workspaces/{bad}/secrets", None),
        ("GET", f"/workspaces/{bad}/secrets/values", None),
        ("POST", f"/workspaces/{bad}/secrets", {"key": "K", "value": "v"}),
        ("PUT", f"/workspaces/{bad}/secrets", {"key": "K", "value": "v"}),
        ("DELETE", f"/workspaces/{bad}/secrets/K", None),
        ("GET", f"/workspaces/{bad}/model", None),
        ("PUT", f"/workspaces/{bad}/model", {"model": "m"}),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=ADMIN_H)
        assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"}), (method, path)


async def test_set_on_unknown_workspace_is_404(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    r = await client.post(f"/workspaces/{UNKNOWN}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    r = await client.put(f"/workspaces/{UNKNOWN}/model", json={"model": "m"}, headers=ADMIN_H)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})


# ---- model ----


async def test_model_get_set_clear(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    ws = await make_ws(client)
    r = await client.get(f"/workspaces/{ws}/model", headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, '{"model":"","source":"default"}')

    r = await client.put(f"/workspaces/{ws}/model", json={"model": "openai:gpt-4o"}, headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, '{"model":"openai:gpt-4o","status":"saved"}')
    (row,) = await ws_rows(client, ws)
    assert (row.key, row.encryption_version) == ("MODEL_PROVIDER", 1)
    assert b"gpt-4o" not in bytes(row.encrypted_value)
    r = await client.get(f"/workspaces/{ws}/model", headers=ADMIN_H)
    assert r.json() == {"model": "openai:gpt-4o", "source": "workspace_secrets"}
    r = await client.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    assert r.json() == {"MODEL_PROVIDER": "openai:gpt-4o"}

    r = await client.put(f"/workspaces/{ws}/model", json={"model": ""}, headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, '{"status":"cleared"}')
    assert await ws_rows(client, ws) == []
    for body in ({}, {"model": None}):  # absent and null bind to "", as in the reference
        r = await client.put(f"/workspaces/{ws}/model", json=body, headers=ADMIN_H)
        assert (r.status_code, r.json()) == (200, {"status": "cleared"})
    r = await client.get(f"/workspaces/{ws}/model", headers=ADMIN_H)
    assert r.json() == {"model": "", "source": "default"}


@pytest.mark.parametrize(
    "body", [b"nope", b"[1]", b'{"model":7}', b'{"model":["m"]}', b'{"model":"a\\u0000"}']
)
async def test_model_bad_body(client_factory: ClientFactory, body: bytes) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    r = await client.put(
        f"/workspaces/{ws}/model", content=body, headers={**ADMIN_H, "Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})


# ---- global scope ----


@pytest.mark.parametrize("base", ["/settings/secrets", "/admin/secrets"])
async def test_global_routes(client_factory: ClientFactory, base: str) -> None:
    client = await admin_client(client_factory)
    r = await client.get(base, headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, "[]")
    r = await client.post(base, json={"key": "OPENAI_API_KEY", "value": "sk-1"}, headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, '{"key":"OPENAI_API_KEY","scope":"global","status":"saved"}')
    if base == "/settings/secrets":
        r = await client.put(base, json={"key": "ANTHROPIC_API_KEY", "value": "x"}, headers=ADMIN_H)
        assert (r.status_code, r.json()["status"]) == (200, "saved")
    else:  # the legacy alias has no PUT
        r = await client.put(base, json={"key": "ANTHROPIC_API_KEY", "value": "x"}, headers=ADMIN_H)
        assert r.status_code == 404
        await client.post(base, json={"key": "ANTHROPIC_API_KEY", "value": "x"}, headers=ADMIN_H)
    r = await client.get(base, headers=ADMIN_H)
    assert "sk-1" not in r.text
    assert strip_times(r.json()) == [
        {"has_value": True, "key": "ANTHROPIC_API_KEY", "scope": "global"},
        {"has_value": True, "key": "OPENAI_API_KEY", "scope": "global"},
    ]
    r = await client.delete(f"{base}/OPENAI_API_KEY", headers=ADMIN_H)
    assert (r.status_code, r.text) == (200, '{"key":"OPENAI_API_KEY","scope":"global","status":"deleted"}')
    r = await client.delete(f"{base}/OPENAI_API_KEY", headers=ADMIN_H)
    assert (r.status_code, r.json()) == (404, {"error": "secret not found"})
    assert [row.key for row in await global_rows(client)] == ["ANTHROPIC_API_KEY"]


async def test_both_global_paths_share_one_table(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    await client.put("/settings/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    r = await client.get("/admin/secrets", headers=ADMIN_H)
    assert [e["key"] for e in r.json()] == ["K"]
    assert (await client.delete("/admin/secrets/K", headers=ADMIN_H)).status_code == 200
    assert (await client.get("/settings/secrets", headers=ADMIN_H)).json() == []


# ---- auth ----


async def test_workspace_routes_auth_matrix(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws, other = await make_ws(client), await make_ws(client)
    own_tok, other_tok = await issue(client, ws), await issue(client, other)
    calls = [
        ("GET", f"/workspaces/{ws}/secrets", None),
        ("POST", f"/workspaces/{ws}/secrets", {"key": "K", "value": "v"}),
        ("PUT", f"/workspaces/{ws}/secrets", {"key": "K", "value": "v"}),
        ("GET", f"/workspaces/{ws}/model", None),
        ("PUT", f"/workspaces/{ws}/model", {"model": "m"}),
        ("DELETE", f"/workspaces/{ws}/secrets/K", None),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body)
        assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"}), path
        r = await client.request(method, path, json=body, headers=bearer(other_tok))
        assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"}), path
        r = await client.request(method, path, json=body, headers=bearer(own_tok))
        assert r.status_code == 200, (method, path, r.text)
    for method, path, body in calls[:-1]:
        r = await client.request(method, path, json=body, headers=ADMIN_H)
        assert r.status_code == 200, (method, path, r.text)


async def test_values_own_token_only_once_tokens_exist(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws, other = await make_ws(client), await make_ws(client)
    await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    path = f"/workspaces/{ws}/secrets/values"

    # no live token yet: grandfathered, any caller that passes WorkspaceAuth reads it
    r = await client.get(path, headers=ADMIN_H)
    assert (r.status_code, r.json()) == (200, {"K": "v"})

    own_tok, other_tok = await issue(client, ws), await issue(client, other)
    r = await client.get(path, headers=bearer(own_tok))
    assert (r.status_code, r.text) == (200, '{"K":"v"}')
    r = await client.get(path, headers=ADMIN_H)  # admin passes the middleware, not the handler
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await client.get(path, headers=bearer(other_tok))
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await client.get(path)
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})


async def test_values_legacy_workspace_without_bearer_in_dev_mode(client_factory: ClientFactory) -> None:
    client = await client_factory(MOLECULE_ENV="development")  # WorkspaceAuth fails open in dev mode
    ws = await make_ws(client)
    await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v"})
    r = await client.get(f"/workspaces/{ws}/secrets/values")
    assert (r.status_code, r.json()) == (200, {"K": "v"})
    await issue(client, ws)
    r = await client.get(f"/workspaces/{ws}/secrets/values")
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})


async def test_global_routes_need_admin(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    ws_tok = await issue(client, ws)
    calls = [
        ("GET", "/settings/secrets", None),
        ("PUT", "/settings/secrets", {"key": "K", "value": "v"}),
        ("POST", "/settings/secrets", {"key": "K", "value": "v"}),
        ("DELETE", "/settings/secrets/K", None),
        ("GET", "/admin/secrets", None),
        ("POST", "/admin/secrets", {"key": "K", "value": "v"}),
        ("DELETE", "/admin/secrets/K", None),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body)
        assert (r.status_code, r.json()) == (401, {"error": "admin auth required"}), path
        r = await client.request(method, path, json=body, headers=bearer(ws_tok))
        assert (r.status_code, r.json()) == (401, {"error": "invalid admin auth token"}), path
    assert await global_rows(client) == []
    r = await client.post("/settings/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    assert r.status_code == 200
