"""`/workspaces/:id/checkpoints` (spec 05 §7, §11) on SQLite and Postgres: what a client sees and what is
stored."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import sqlalchemy as sa

from tests.integration.registry_support import add_workspace, ctx_of, mint_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import workflow_checkpoints, workspaces

ADMIN = "admin-secret"
AH = {"Authorization": f"Bearer {ADMIN}"}
ENTRY_KEYS = ["id", "workspace_id", "workflow_id", "step_name", "step_index", "completed_at", "payload"]
BAD = (400, {"error": "invalid request body"})


async def _ws(client: httpx.AsyncClient, name: str = "ws") -> tuple[str, dict[str, str]]:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, name, status="online")
    return ws_id, {"Authorization": f"Bearer {await mint_token(ctx, ws_id)}"}


async def _post(client: httpx.AsyncClient, ws: str, h: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(f"/workspaces/{ws}/checkpoints", json=body, headers=h)


async def _rows(client: httpx.AsyncClient, ws: str) -> list[Any]:
    c = workflow_checkpoints
    async with ctx_of(client).engine.connect() as conn:
        stmt = sa.select(c).where(c.c.workspace_id == ws).order_by(c.c.workflow_id, c.c.step_index)
        return list((await conn.execute(stmt)).all())


async def test_upsert_reply_row_and_last_write_wins(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client)

    r = await _post(client, ws, h, workflow_id="wf-1", step_name="fetch", step_index=1, payload={"n": 1})
    assert r.status_code == 201
    first = r.json()
    assert list(first) == ["id", "step_name", "workflow_id", "workspace_id"]  # a Go map: sorted keys
    assert first == {"id": first["id"], "step_name": "fetch", "workflow_id": "wf-1", "workspace_id": ws}
    [row] = await _rows(client, ws)
    assert (row.id, row.step_index, row.payload) == (first["id"], 1, {"n": 1})
    before = row.completed_at

    # the same step again: 201, same row, step_index, payload and completed_at refreshed
    r = await _post(client, ws, h, workflow_id="wf-1", step_name="fetch", step_index=4, payload=[1, "two"])
    assert (r.status_code, r.json()) == (201, first)
    [row] = await _rows(client, ws)
    assert (row.id, row.step_index, row.payload) == (first["id"], 4, [1, "two"])
    assert row.completed_at >= before

    # payload omitted (or null) and step_index omitted: JSON null and 0
    r = await _post(client, ws, h, workflow_id="wf-1", step_name="fetch")
    assert r.status_code == 201
    [row] = await _rows(client, ws)
    assert (row.step_index, row.payload) == (0, None)
    r = await client.get(f"/workspaces/{ws}/checkpoints/wf-1", headers=h)
    assert r.json()[0]["payload"] is None and r.json()[0]["step_index"] == 0
    assert '"payload":null' in r.text


async def test_concurrent_upserts_of_one_step_leave_one_row(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client)
    replies = await asyncio.gather(
        *(_post(client, ws, h, workflow_id="wf", step_name="s", step_index=i) for i in range(8))
    )
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["id"] for r in replies}) == 1
    assert len(await _rows(client, ws)) == 1


async def test_bad_bodies_are_400_and_store_nothing(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client)
    ok = {"workflow_id": "wf", "step_name": "s"}
    bodies: list[Any] = [
        {"step_name": "s"},
        {"workflow_id": "wf"},
        {"workflow_id": "", "step_name": "s"},
        {"workflow_id": "wf", "step_name": None},
        {"workflow_id": 5, "step_name": "s"},
        {**ok, "step_index": "3"},
        {**ok, "step_index": 1.5},
        {**ok, "step_index": True},
        {**ok, "step_index": 2**31},
        {**ok, "step_index": -(2**31) - 1},
        {**ok, "payload": {"k": "nul\u0000"}},
        [ok],
        "wf",
    ]
    for body in bodies:
        r = await client.post(f"/workspaces/{ws}/checkpoints", json=body, headers=h)
        assert (r.status_code, r.json()) == BAD, body
    for raw in (
        b"{",
        b"",
        b'{"workflow_id":"wf","step_name":"s","payload":NaN}',
        b'{"workflow_id":"wf","step_name":"s","payload":1e400}',
        b'{"workflow_id":"wf","step_name":"s","payload":"\\ud800"}',
    ):
        r = await client.post(f"/workspaces/{ws}/checkpoints", content=raw, headers=h)
        assert (r.status_code, r.json()) == BAD, raw
    assert await _rows(client, ws) == []
    # the INTEGER bounds themselves are fine
    for n in (2**31 - 1, -(2**31)):
        assert (
            await _post(client, ws, h, workflow_id="wf", step_name=f"s{n}", step_index=n)
        ).status_code == 201


async def test_unknown_workspace_is_404_not_a_foreign_key_500(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    for ws in (new_id(), "not-a-uuid"):
        r = await _post(client, ws, AH, workflow_id="wf", step_name="s")
        assert (r.status_code, r.json()) == (404, {"error": "workspace not found"}), ws
        r = await client.get(f"/workspaces/{ws}/checkpoints/latest", headers=AH)
        assert (r.status_code, r.json()) == (404, {"error": "no checkpoints found for workspace"})
        r = await client.get(f"/workspaces/{ws}/checkpoints/wf", headers=AH)
        assert (r.status_code, r.json()) == (404, {"error": "no checkpoints found for workflow"})


async def test_latest_list_and_delete(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client)
    other, oh = await _ws(client, "other")

    r = await client.get(f"/workspaces/{ws}/checkpoints/latest", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "no checkpoints found for workspace"})

    for wf, step, idx in [("a", "one", 0), ("a", "three", 2), ("a", "two", 1), ("b", "only", 7)]:
        assert (await _post(client, ws, h, workflow_id=wf, step_name=step, step_index=idx)).status_code == 201
    await _post(client, other, oh, workflow_id="a", step_name="theirs", step_index=9)

    r = await client.get(f"/workspaces/{ws}/checkpoints/latest", headers=h)
    assert r.status_code == 200
    latest = r.json()
    assert list(latest) == ENTRY_KEYS
    assert (latest["workflow_id"], latest["step_name"], latest["step_index"]) == ("b", "only", 7)
    assert latest["workspace_id"] == ws and latest["payload"] is None
    assert latest["completed_at"].endswith("Z")

    # re-completing an older step makes it the latest
    await _post(client, ws, h, workflow_id="a", step_name="one", step_index=0, payload="again")
    r = await client.get(f"/workspaces/{ws}/checkpoints/latest", headers=h)
    assert (r.json()["step_name"], r.json()["payload"]) == ("one", "again")

    r = await client.get(f"/workspaces/{ws}/checkpoints/a", headers=h)
    assert r.status_code == 200
    assert [e["step_name"] for e in r.json()] == ["three", "two", "one"]  # step_index desc
    assert all(list(e) == ENTRY_KEYS for e in r.json())
    r = await client.get(f"/workspaces/{ws}/checkpoints/nope", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "no checkpoints found for workflow"})

    r = await client.delete(f"/workspaces/{ws}/checkpoints/a", headers=h)
    assert (r.status_code, r.text) == (200, '{"deleted":3,"workflow_id":"a"}')
    r = await client.delete(f"/workspaces/{ws}/checkpoints/a", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "no checkpoints found for workflow"})
    assert [(x.workflow_id, x.step_name) for x in await _rows(client, ws)] == [("b", "only")]
    assert [x.step_name for x in await _rows(client, other)] == ["theirs"]  # other workspace untouched


async def test_auth(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, _h = await _ws(client)
    _other, oh = await _ws(client, "other")
    calls = [
        ("POST", f"/workspaces/{ws}/checkpoints"),
        ("GET", f"/workspaces/{ws}/checkpoints/latest"),
        ("GET", f"/workspaces/{ws}/checkpoints/wf"),
        ("DELETE", f"/workspaces/{ws}/checkpoints/wf"),
    ]
    for method, url in calls:
        body = {"workflow_id": "wf", "step_name": "s"}
        r = await client.request(method, url, json=body if method == "POST" else None)
        assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"}), url
        for bad in ({"Authorization": "Bearer nope"}, oh):  # a junk token, another workspace's token
            r = await client.request(method, url, json=body if method == "POST" else None, headers=bad)
            assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"}), url
    assert await _rows(client, ws) == []


async def test_purged_workspace_loses_its_checkpoints(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client)
    await _post(client, ws, h, workflow_id="wf", step_name="s", payload={"x": 1})
    r = await client.delete(f"/workspaces/{ws}?purge=true", headers=AH)
    assert r.status_code == 200, r.text
    assert await _rows(client, ws) == []
    r = await client.get(f"/workspaces/{ws}/checkpoints/wf", headers=AH)
    assert (r.status_code, r.json()) == (404, {"error": "no checkpoints found for workflow"})

    # the foreign key cascades too, for rows deleted outside the purge helper
    ws2, h2 = await _ws(client, "ws2")
    await _post(client, ws2, h2, workflow_id="wf", step_name="s")
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(sa.delete(workspaces).where(workspaces.c.id == ws2))
    assert await _rows(client, ws2) == []
    r = await client.get(f"/workspaces/{ws2}/checkpoints/latest", headers=AH)
    assert (r.status_code, r.json()) == (404, {"error": "no checkpoints found for workspace"})
