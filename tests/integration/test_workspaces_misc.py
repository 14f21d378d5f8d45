"""State, config, budget, bootstrap-failed and canvas viewport routes (spec 01 §3)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import sqlalchemy as sa

from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import structure_events, workspaces
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"


def ctx_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


async def setup(client_factory: Any, **overrides: Any) -> tuple[httpx.AsyncClient, str]:
    client = await client_factory(ADMIN_TOKEN=ADMIN, **overrides)
    r = await client.post("/workspaces", json={"name": "alpha"}, headers=AUTH)
    return client, r.json()["id"]


async def provisioning_row(client: httpx.AsyncClient) -> str:
    ws_id = new_id()
    async with ctx_of(client).engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name="booting")
    return ws_id


async def set_columns(client: httpx.AsyncClient, ws_id: str, **values: Any) -> None:
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == ws_id).values(**values))


# ---- state ----


async def test_state_shapes(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    r = await client.get(f"/workspaces/{ws_id}/state", headers=AUTH)
    assert (r.status_code, r.json()) == (
        200,
        {"deleted": False, "paused": False, "status": "failed", "workspace_id": ws_id},
    )
    await set_columns(client, ws_id, status="paused")
    assert (await client.get(f"/workspaces/{ws_id}/state", headers=AUTH)).json()["paused"] is True

    await client.delete(f"/workspaces/{ws_id}", headers=AUTH)
    r = await client.get(f"/workspaces/{ws_id}/state", headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"deleted": True, "status": "removed", "workspace_id": ws_id})
    r = await client.get(f"/workspaces/{UNKNOWN}/state", headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"deleted": True, "workspace_id": UNKNOWN})


async def test_state_with_live_token_needs_that_token(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    async with ctx_of(client).engine.begin() as conn:
        token = await issue_workspace_token(conn, ws_id)
    # the admin bearer passes WorkspaceAuth but not the in-handler owner check
    r = await client.get(f"/workspaces/{ws_id}/state", headers=AUTH)
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await client.get(f"/workspaces/{ws_id}/state")
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.get(f"/workspaces/{ws_id}/state", headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()["status"]) == (200, "failed")


# ---- config ----


async def test_config_get_patch_merge(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id = await provisioning_row(client)
    r = await client.get(f"/workspaces/{ws_id}/config", headers=AUTH)
    assert (r.status_code, r.text) == (200, '{"data":{}}')
    r = await client.patch(f"/workspaces/{ws_id}/config", json={"a": 1, "b": {"c": 1}}, headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"status": "updated"})
    await client.patch(f"/workspaces/{ws_id}/config", json={"b": 2, "d": None}, headers=AUTH)
    r = await client.get(f"/workspaces/{ws_id}/config", headers=AUTH)
    assert r.json() == {"data": {"a": 1, "b": 2, "d": None}}  # shallow: b replaced wholesale


async def test_config_patch_errors(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id = await provisioning_row(client)
    url = f"/workspaces/{ws_id}/config"
    for raw in (b"{nope", b"", b"[1,2]", b'"text"', b'{"a":NaN}', b'{"a":"x\\u0000"}'):
        r = await client.patch(url, content=raw, headers=AUTH)
        assert (r.status_code, r.json()) == (400, {"error": "invalid JSON"}), raw
    big = json.dumps({"blob": "x" * (256 * 1024)}).encode()
    r = await client.patch(url, content=big, headers=AUTH)
    assert (r.status_code, r.json()) == (413, {"error": "body too large or unreadable"})
    r = await client.patch(f"/workspaces/{UNKNOWN}/config", json={"a": 1}, headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    r = await client.get(url)
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    assert (await client.get(url, headers=AUTH)).json() == {"data": {}}


# ---- budget ----


async def test_budget_math(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    url = f"/workspaces/{ws_id}/budget"
    r = await client.get(url, headers=AUTH)
    assert (r.status_code, r.text) == (200, '{"budget_limit":null,"monthly_spend":0,"budget_remaining":null}')

    await set_columns(client, ws_id, monthly_spend=123)
    r = await client.patch(url, json={"budget_limit": 500}, headers=AUTH)
    assert (r.status_code, r.json()) == (
        200,
        {"budget_limit": 500, "monthly_spend": 123, "budget_remaining": 377},
    )
    await set_columns(client, ws_id, monthly_spend=150)
    r = await client.patch(url, json={"budget_limit": 100}, headers=AUTH)
    assert r.json() == {"budget_limit": 100, "monthly_spend": 150, "budget_remaining": -50}
    r = await client.patch(url, json={"budget_limit": 0}, headers=AUTH)
    assert r.json() == {"budget_limit": 0, "monthly_spend": 150, "budget_remaining": -150}
    r = await client.patch(url, json={"budget_limit": 250.9}, headers=AUTH)
    assert r.json()["budget_limit"] == 250
    r = await client.patch(url, json={"budget_limit": None}, headers=AUTH)
    assert r.json() == {"budget_limit": None, "monthly_spend": 150, "budget_remaining": None}
    assert (await client.get(url, headers=AUTH)).json() == r.json()


async def test_budget_errors_and_admin_only_write(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    url = f"/workspaces/{ws_id}/budget"
    for body, msg in (
        ({}, "budget_limit field is required"),
        ({"budget_limit": -1}, "budget_limit must be >= 0 (USD cents)"),
        ({"budget_limit": "500"}, "budget_limit must be an integer (USD cents) or null"),
        ({"budget_limit": [5]}, "budget_limit must be an integer (USD cents) or null"),
    ):
        r = await client.patch(url, json=body, headers=AUTH)
        assert (r.status_code, r.json()) == (400, {"error": msg}), body
    r = await client.patch(url, content=b"nope", headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})

    async with ctx_of(client).engine.begin() as conn:
        token = await issue_workspace_token(conn, ws_id)
    own = {"Authorization": f"Bearer {token}"}
    assert (await client.get(url, headers=own)).status_code == 200  # the workspace may read its budget
    r = await client.patch(url, json={"budget_limit": None}, headers=own)  # but not lift it (#611)
    assert (r.status_code, r.json()) == (401, {"error": "invalid admin auth token"})

    r = await client.patch(f"/workspaces/{UNKNOWN}/budget", json={"budget_limit": 5}, headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    await client.delete(f"/workspaces/{ws_id}", headers=AUTH)
    for resp in (
        await client.get(url, headers=AUTH),
        await client.patch(url, json={"budget_limit": 5}, headers=AUTH),
    ):
        assert (resp.status_code, resp.json()) == (404, {"error": "workspace not found"})


# ---- bootstrap-failed ----


async def provision_failed_events(client: httpx.AsyncClient, ws_id: str) -> list[Any]:
    e = structure_events
    async with ctx_of(client).engine.connect() as conn:
        q = sa.select(e.c.payload).where(
            e.c.workspace_id == ws_id, e.c.event_type == "WORKSPACE_PROVISION_FAILED"
        )
        return list((await conn.execute(q)).scalars().all())


async def test_bootstrap_failed_marks_provisioning_row_once(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id = await provisioning_row(client)
    url = f"/admin/workspaces/{ws_id}/bootstrap-failed"
    r = await client.post(url, json={"error": " boom ", "log_tail": "Traceback..."}, headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"ok": True})
    async with ctx_of(client).engine.connect() as conn:
        w = (await conn.execute(sa.select(workspaces).where(workspaces.c.id == ws_id))).one()
    assert (w.status, w.last_sample_error) == ("failed", "boom\n\nTraceback...")
    expected = {"error": "boom", "log_tail": "Traceback...", "source": "bootstrap_watcher"}
    assert await provision_failed_events(client, ws_id) == [expected]

    r = await client.post(url, json={"error": "again"}, headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"no_change": True, "ok": True})
    assert len(await provision_failed_events(client, ws_id)) == 1


async def test_bootstrap_failed_truncates_and_defaults(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id = await provisioning_row(client)
    tail = "a" * 5000 + "é" * 3000  # 11000 bytes
    r = await client.post(
        f"/admin/workspaces/{ws_id}/bootstrap-failed", json={"log_tail": tail}, headers=AUTH
    )
    assert r.json() == {"ok": True}
    (payload,) = await provision_failed_events(client, ws_id)
    assert payload["error"] == "bootstrap failed — see log_tail"
    assert payload["log_tail"].startswith("...(truncated)...\n")
    assert payload["log_tail"].endswith("é" * 100)
    assert len(payload["log_tail"].encode()) <= 8192 + len("...(truncated)...\n")
    async with ctx_of(client).engine.connect() as conn:
        err = (
            await conn.execute(sa.select(workspaces.c.last_sample_error).where(workspaces.c.id == ws_id))
        ).scalar()
    assert err.startswith("bootstrap failed — see log_tail\n\n...(truncated)...\n")
    assert len(err.encode()) <= 8192


async def test_bootstrap_failed_errors(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id = await provisioning_row(client)
    url = f"/admin/workspaces/{ws_id}/bootstrap-failed"
    for raw in (b"", b"nope", b"[]", b'{"error": 5}'):
        r = await client.post(url, content=raw, headers=AUTH)
        assert (r.status_code, r.json()) == (400, {"error": "invalid request body"}), raw
    r = await client.post(url, json={"error": "x"})
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    r = await client.post(url, json={"error": "nul\u0000here", "log_tail": "a\u0000b"}, headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"ok": True})
    assert await provision_failed_events(client, ws_id) == [
        {"error": "nulhere", "log_tail": "ab", "source": "bootstrap_watcher"}
    ]


# ---- viewport ----


async def test_viewport_default_save_and_reload(client_factory: Any) -> None:
    client = await client_factory()  # no tokens anywhere: the canvas class is open
    r = await client.get("/canvas/viewport")
    assert (r.status_code, r.text) == (200, '{"x":0,"y":0,"zoom":1}')
    r = await client.put("/canvas/viewport", json={"x": 10.5, "y": -3, "zoom": 1.0})
    assert (r.status_code, r.json()) == (200, {"status": "saved"})
    assert (await client.get("/canvas/viewport")).text == '{"x":10.5,"y":-3,"zoom":1}'
    await client.put("/canvas/viewport", json={"zoom": 2})
    assert (await client.get("/canvas/viewport")).text == '{"x":0,"y":0,"zoom":2}'
    for raw in (b"nope", b"[]", b'{"x":"left"}', b'{"zoom":true}', b'{"x":NaN}'):
        r = await client.put("/canvas/viewport", content=raw)
        assert (r.status_code, r.json()) == (400, {"error": "invalid viewport data"}), raw


async def test_viewport_put_needs_canvas_or_bearer_once_tokens_exist(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    async with ctx_of(client).engine.begin() as conn:
        token = await issue_workspace_token(conn, ws_id)
    r = await client.put("/canvas/viewport", json={"x": 1})
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    # ADMIN_TOKEN set: an Origin alone is no credential (issue 11 §3); the canvas sends the admin bearer
    r = await client.put("/canvas/viewport", json={"x": 1}, headers={"Origin": "http://localhost:3000"})
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    ok = await client.put(
        "/canvas/viewport", json={"x": 1}, headers={"Origin": "http://localhost:3000", **AUTH}
    )
    assert ok.status_code == 200
    ok = await client.put("/canvas/viewport", json={"x": 2}, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert (await client.get("/canvas/viewport")).json() == {"x": 2, "y": 0, "zoom": 0}
