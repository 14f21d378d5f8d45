"""`GET /workspaces/:id/session-search` (spec 04 §4): one search over own activity rows and memories."""

from __future__ import annotations

from typing import Any

from workspace_server.activity.service import log_activity
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"


async def _ws(ctx: Any, name: str) -> tuple[str, dict[str, str]]:
    ws_id = new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name=name, status="online")
        token = await issue_workspace_token(conn, ws_id)
    return ws_id, {"Authorization": f"Bearer {token}"}


async def test_union_of_activity_and_memories(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx
    me, h = await _ws(ctx, "me")
    other, oh = await _ws(ctx, "other")

    await log_activity(
        ctx.engine,
        None,
        workspace_id=me,
        activity_type="a2a_receive",
        method="message/send",
        summary="asked about invoices",
        request_body={"q": "Quarterly REPORT please"},
        status="ok",
    )
    await log_activity(ctx.engine, None, workspace_id=me, activity_type="agent_log", summary="100% done")
    await log_activity(
        ctx.engine, None, workspace_id=other, activity_type="agent_log", summary="invoices elsewhere"
    )
    r = await client.post(
        f"/workspaces/{me}/memories",
        json={"content": "invoice numbers start at 7", "scope": "TEAM"},
        headers=h,
    )
    assert r.status_code == 201
    memory_id = r.json()["id"]
    r = await client.post(
        f"/workspaces/{other}/memories", json={"content": "invoice secrets", "scope": "LOCAL"}, headers=oh
    )
    assert r.status_code == 201

    r = await client.get(f"/workspaces/{me}/session-search", headers=h)
    assert r.status_code == 200
    items = r.json()
    assert [i["kind"] for i in items] == ["memory", "activity", "activity"]  # newest first
    mem = items[0]
    assert list(mem) == ["content", "created_at", "id", "kind", "label", "method", "status", "workspace_id"]
    assert mem["id"] == memory_id
    assert (mem["label"], mem["content"], mem["method"], mem["status"]) == (
        "TEAM",
        "invoice numbers start at 7",
        "",
        "",
    )
    receive = items[2]
    assert (receive["label"], receive["content"], receive["method"]) == (
        "a2a_receive",
        "asked about invoices",
        "message/send",
    )
    assert receive["request_body"] == {"q": "Quarterly REPORT please"}
    assert "response_body" not in receive

    async def kinds(**params: Any) -> list[tuple[str, str]]:
        r = await client.get(f"/workspaces/{me}/session-search", params=params, headers=h)
        assert r.status_code == 200
        return [(i["kind"], i["content"]) for i in r.json()]

    assert await kinds(q="  INVOICE ") == [
        ("memory", "invoice numbers start at 7"),
        ("activity", "asked about invoices"),
    ]
    assert await kinds(q="quarterly report") == [("activity", "asked about invoices")]  # inside request_body
    assert await kinds(q="message/") == [("activity", "asked about invoices")]  # method
    assert await kinds(q="agent_log") == [("activity", "100% done")]  # label
    assert await kinds(q="100%") == [("activity", "100% done")]  # `%` is literal
    assert await kinds(q="%") == [("activity", "100% done")]
    assert await kinds(q="nothing like this") == []
    assert len(await kinds(limit="1")) == 1
    assert len(await kinds(limit="0")) == 3
    assert len(await kinds(limit="x")) == 3


async def test_needs_workspace_auth(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    me, _ = await _ws(client.app.state.ctx, "me")
    r = await client.get(f"/workspaces/{me}/session-search")
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.get(f"/workspaces/{me}/session-search", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
