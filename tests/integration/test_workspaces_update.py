"""PATCH /workspaces/:id (spec 01 §3): check order, per-key writes, layout upserts, workspace_dir."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from workspace_server.db.schema import workspaces

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"


async def setup(client_factory: Any) -> tuple[httpx.AsyncClient, str]:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await client.post("/workspaces", json={"name": "alpha", "role": "r"}, headers=AUTH)
    return client, r.json()["id"]


async def listed(client: httpx.AsyncClient, ws_id: str) -> dict[str, Any]:
    rows = (await client.get("/workspaces", headers=AUTH)).json()
    return next(w for w in rows if w["id"] == ws_id)


async def patch(client: httpx.AsyncClient, ws_id: str, body: Any, headers: Any = None) -> httpx.Response:
    headers = AUTH if headers is None else headers
    if isinstance(body, str):
        return await client.patch(f"/workspaces/{ws_id}", content=body, headers=headers)
    return await client.patch(f"/workspaces/{ws_id}", json=body, headers=headers)


async def test_patch_writes_each_present_key(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    r = await patch(
        client,
        ws_id,
        {"name": "beta", "role": "", "tier": 2, "runtime": "hermes", "collapsed": True, "x": 10, "y": 20.5},
    )
    assert (r.status_code, r.text) == (200, '{"status":"updated"}')
    w = await listed(client, ws_id)
    assert (w["name"], w["role"], w["tier"], w["runtime"], w["collapsed"], w["x"], w["y"]) == (
        "beta",
        None,
        2,
        "hermes",
        True,
        10,
        20.5,
    )
    text = (await client.get(f"/workspaces/{ws_id}")).text
    assert '"x":10,' in text and '"y":20.5' in text


async def test_patch_position_needs_both_coordinates(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    await patch(client, ws_id, {"x": 5, "y": 6})
    assert (await patch(client, ws_id, {"x": 99})).json() == {"status": "updated"}
    w = await listed(client, ws_id)
    assert (w["x"], w["y"]) == (5, 6)
    assert (await patch(client, ws_id, {"collapsed": True})).status_code == 200
    w = await listed(client, ws_id)
    assert (w["x"], w["y"], w["collapsed"]) == (5, 6, True)


async def test_patch_budget_limit_is_ignored(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    r = await patch(client, ws_id, {"budget_limit": 5})
    assert (r.status_code, r.json()) == (200, {"status": "updated"})
    assert (await listed(client, ws_id))["budget_limit"] is None


async def test_patch_workspace_dir_set_clear_and_reject(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    r = await patch(client, ws_id, {"workspace_dir": "/home/me/code"})
    assert r.text == '{"needs_restart":true,"status":"updated"}'
    assert (await listed(client, ws_id))["workspace_dir"] == "/home/me/code"
    r = await patch(client, ws_id, {"workspace_dir": None})
    assert r.json() == {"needs_restart": True, "status": "updated"}
    assert (await listed(client, ws_id))["workspace_dir"] is None

    r = await patch(client, ws_id, {"name": "renamed", "workspace_dir": "/etc/passwd"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid workspace directory"})
    assert (await listed(client, ws_id))["name"] == "alpha"  # nothing written on a rejected body


async def test_patch_accepts_self_parent_and_clears_parent(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    assert (await patch(client, ws_id, {"parent_id": ws_id})).status_code == 200
    assert (await listed(client, ws_id))["parent_id"] == ws_id
    assert (await patch(client, ws_id, {"parent_id": None})).status_code == 200
    assert (await listed(client, ws_id))["parent_id"] is None


async def test_patch_check_order(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    # 1. field rules come first, with their specific message, even for unknown ids
    for body, msg in (
        ({"name": "a\nb"}, "name must not contain newline characters"),
        ({"role": "a{b"}, "role contains invalid characters"),
        ({"runtime": "x" * 101}, "runtime must be at most 100 characters"),
        ({"name": "n" * 256}, "name must be at most 255 characters"),
    ):
        for target in (ws_id, UNKNOWN):
            r = await patch(client, target, body)
            assert (r.status_code, r.json()) == (400, {"error": msg}), (body, target)
    # 2. existence before 3. body validity
    r = await patch(client, UNKNOWN, "{not json")
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    r = await patch(client, ws_id, "{not json")
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    r = await patch(client, UNKNOWN, {"name": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    r = await patch(client, "not-a-uuid", {"name": "x"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"})


async def test_patch_requires_workspace_auth(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    r = await patch(client, ws_id, {"name": "x"}, headers={})
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await patch(client, ws_id, {"name": "x"}, headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})


async def test_patch_on_removed_row_still_updates(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    await client.delete(f"/workspaces/{ws_id}", headers=AUTH)
    assert (await patch(client, ws_id, {"name": "ghost"})).json() == {"status": "updated"}
    async with client.app.state.ctx.engine.connect() as conn:  # type: ignore[attr-defined]
        name = (await conn.execute(sa.select(workspaces.c.name).where(workspaces.c.id == ws_id))).scalar()
    assert name == "ghost"


async def test_patch_skips_unusable_values_but_applies_the_rest(client_factory: Any) -> None:
    client, ws_id = await setup(client_factory)
    r = await patch(
        client, ws_id, {"tier": "high", "name": None, "runtime": 7, "x": "a", "y": 1, "role": "ok"}
    )
    assert (r.status_code, r.json()) == (200, {"status": "updated"})
    w = await listed(client, ws_id)
    assert (w["tier"], w["name"], w["runtime"], w["x"], w["role"]) == (3, "alpha", "langgraph", 0, "ok")
    # Numbers beyond float64 range: Go's decoder refuses the body (and a stored Infinity could not be
    # sent again), so it is the reference's `invalid request body` and nothing is written (issue 11 §3).
    huge = '{"x": 1' + "0" * 400 + ', "y": 1e400, "tier": 1' + "0" * 400 + "}"
    r = await patch(client, ws_id, huge)
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    assert await listed(client, ws_id) == w
