"""`/workspaces/:id/activity` and `/workspaces/:id/notify` (spec 04 §4), on SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from workspace_server.activity.service import log_activity, prune_activity
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import activity_logs
from workspace_server.events.bus import Event
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
ITEM_KEYS = {
    "id",
    "workspace_id",
    "activity_type",
    "source_id",
    "target_id",
    "method",
    "summary",
    "duration_ms",
    "status",
    "error_detail",
    "created_at",
}


async def _setup(client_factory: Any) -> tuple[httpx.AsyncClient, Any, list[Event]]:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx
    seen: list[Event] = []
    ctx.bus.add_listener(seen.append)
    return client, ctx, seen


async def _workspace(
    ctx: Any, name: str = "ws", status: str = "online", token: bool = True
) -> tuple[str, str]:
    ws_id = new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name=name, status=status)
        tok = await issue_workspace_token(conn, ws_id) if token else ""
    return ws_id, tok


def _bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def _rows(ctx: Any, ws_id: str) -> list[Any]:
    async with ctx.engine.connect() as conn:
        q = sa.select(activity_logs).where(activity_logs.c.workspace_id == ws_id)
        return list((await conn.execute(q)).all())


async def test_report_logs_row_and_broadcasts(client_factory: Any) -> None:
    client, ctx, seen = await _setup(client_factory)
    ws_id, tok = await _workspace(ctx)
    body = {"activity_type": "agent_log", "summary": "did a thing", "metadata": {"k": 1}, "duration_ms": 12}
    r = await client.post(f"/workspaces/{ws_id}/activity", json=body, headers=_bearer(tok))
    assert r.status_code == 200
    assert r.json() == {"status": "logged"}

    r = await client.get(f"/workspaces/{ws_id}/activity", headers=_bearer(tok))
    assert r.status_code == 200
    [item] = r.json()
    assert set(item) == ITEM_KEYS | {"request_body"}  # no response_body/tool_trace when null
    assert list(item) == sorted(item)  # a map upstream: Go sorts its keys
    assert item["workspace_id"] == ws_id
    assert item["activity_type"] == "agent_log"
    assert item["source_id"] == ws_id  # empty source_id means the caller itself
    assert item["target_id"] is None and item["method"] is None and item["error_detail"] is None
    assert item["summary"] == "did a thing"
    assert item["status"] == "ok"
    assert item["duration_ms"] == 12
    assert item["request_body"] == {"k": 1}  # falls back to metadata
    assert item["created_at"].endswith("Z")

    [ev] = [e for e in seen if e.event == "ACTIVITY_LOGGED"]
    assert ev.workspace_id == ws_id
    assert ev.payload == {
        "activity_type": "agent_log",
        "method": None,
        "summary": "did a thing",
        "status": "ok",
        "source_id": ws_id,
        "target_id": None,
        "duration_ms": 12,
    }


async def test_report_keeps_explicit_bodies_and_status(client_factory: Any) -> None:
    client, ctx, _ = await _setup(client_factory)
    ws_id, tok = await _workspace(ctx)
    target = new_id()
    body = {
        "activity_type": "a2a_send",
        "method": "message/send",
        "source_id": ws_id,
        "target_id": target,
        "status": "error",
        "error_detail": "boom",
        "request_body": {"q": 1},
        "response_body": ["r"],
        "metadata": {"ignored": True},
    }
    r = await client.post(f"/workspaces/{ws_id}/activity", json=body, headers=_bearer(tok))
    assert r.status_code == 200
    [item] = (await client.get(f"/workspaces/{ws_id}/activity", headers=_bearer(tok))).json()
    assert item["request_body"] == {"q": 1}
    assert item["response_body"] == ["r"]
    assert item["status"] == "error" and item["error_detail"] == "boom"
    assert item["target_id"] == target and item["method"] == "message/send"
    assert item["duration_ms"] is None


async def test_report_rejects_spoofed_source_id(client_factory: Any) -> None:
    client, ctx, seen = await _setup(client_factory)
    ws_id, tok = await _workspace(ctx)
    other, _ = await _workspace(ctx, "other")
    body = {"activity_type": "agent_log", "source_id": other}
    r = await client.post(f"/workspaces/{ws_id}/activity", json=body, headers=_bearer(tok))
    assert r.status_code == 403
    assert r.json() == {"error": "source_id must match authenticated workspace"}
    assert await _rows(ctx, ws_id) == []
    assert [e for e in seen if e.event == "ACTIVITY_LOGGED"] == []


async def test_report_validation_errors(client_factory: Any) -> None:
    client, ctx, _ = await _setup(client_factory)
    ws_id, tok = await _workspace(ctx)
    url, h = f"/workspaces/{ws_id}/activity", _bearer(tok)

    r = await client.post(url, json={"activity_type": "made_up"}, headers=h)
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid activity_type, must be one of: a2a_send, a2a_receive, task_update, agent_log, "
        "skill_promotion, memory_write, error"
    }
    bad: Any
    for bad in ({}, {"activity_type": ""}, {"activity_type": "agent_log", "duration_ms": "5"}, []):
        r = await client.post(url, json=bad, headers=h)
        assert r.status_code == 400, bad
        assert r.json() == {"error": "invalid request body"}
    r = await client.post(url, content=b"{nope", headers=h)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid request body"}
    assert await _rows(ctx, ws_id) == []


async def test_activity_routes_require_the_workspace_token(client_factory: Any) -> None:
    client, ctx, _ = await _setup(client_factory)
    ws_id, _tok = await _workspace(ctx)
    _other, other_tok = await _workspace(ctx, "other")
    r = await client.get(f"/workspaces/{ws_id}/activity")
    assert r.status_code == 401
    assert r.json() == {"error": "missing workspace auth token"}
    r = await client.post(
        f"/workspaces/{ws_id}/activity", json={"activity_type": "agent_log"}, headers=_bearer(other_tok)
    )
    assert r.status_code == 401
    assert r.json() == {"error": "invalid workspace auth token"}
    r = await client.post(f"/workspaces/{ws_id}/notify", json={"message": "x"}, headers=_bearer(other_tok))
    assert r.status_code == 401
    assert await _rows(ctx, ws_id) == []


async def test_list_filters_order_and_limit(client_factory: Any) -> None:
    client, ctx, _ = await _setup(client_factory)
    ws_id, tok = await _workspace(ctx)
    base = utcnow() - timedelta(minutes=10)
    async with ctx.engine.begin() as conn:
        for i, (kind, source) in enumerate(
            [("a2a_receive", None), ("agent_log", ws_id), ("a2a_receive", "peer"), ("agent_log", None)]
        ):
            await conn.execute(
                sa.insert(activity_logs).values(
                    id=new_id(),
                    workspace_id=ws_id,
                    activity_type=kind,
                    source_id=source,
                    summary=f"row{i}",
                    status="ok",
                    created_at=base + timedelta(seconds=i),
                )
            )
    url, h = f"/workspaces/{ws_id}/activity", _bearer(tok)

    async def summaries(params: dict[str, str]) -> list[str]:
        r = await client.get(url, params=params, headers=h)
        assert r.status_code == 200
        return [i["summary"] for i in r.json()]

    assert await summaries({}) == ["row3", "row2", "row1", "row0"]  # newest first
    assert await summaries({"type": "a2a_receive"}) == ["row2", "row0"]
    assert await summaries({"source": "canvas"}) == ["row3", "row0"]
    assert await summaries({"source": "agent"}) == ["row2", "row1"]
    assert await summaries({"type": "a2a_receive", "source": "canvas"}) == ["row0"]
    assert await summaries({"limit": "2"}) == ["row3", "row2"]
    assert await summaries({"limit": "abc"}) == ["row3", "row2", "row1", "row0"]
    assert await summaries({"limit": "0"}) == ["row3", "row2", "row1", "row0"]
    r = await client.get(url, params={"source": "bogus"}, headers=h)
    assert r.status_code == 400
    assert r.json() == {"error": "source must be 'canvas' or 'agent'"}


async def test_list_caps_limit_at_500(client_factory: Any) -> None:
    client, ctx, _ = await _setup(client_factory)
    ws_id, _tok = await _workspace(ctx, token=False)
    now = utcnow()
    async with ctx.engine.begin() as conn:
        await conn.execute(
            sa.insert(activity_logs),
            [
                {
                    "id": new_id(),
                    "workspace_id": ws_id,
                    "activity_type": "agent_log",
                    "status": "ok",
                    "created_at": now - timedelta(seconds=i),
                }
                for i in range(505)
            ],
        )
    r = await client.get(f"/workspaces/{ws_id}/activity", params={"limit": "9999"}, headers=ADMIN_H)
    assert len(r.json()) == 500
    r = await client.get(f"/workspaces/{ws_id}/activity", headers=ADMIN_H)
    assert len(r.json()) == 100


async def test_notify_with_attachments_persists_row_and_broadcasts(client_factory: Any) -> None:
    client, ctx, seen = await _setup(client_factory)
    ws_id, tok = await _workspace(ctx, name="Designer")
    message = "Here's the build: " + "x" * 100
    attachments = [
        {
            "uri": "workspace:/workspace/.molecule/chat-uploads/abc-build.zip",
            "name": "build.zip",
            "mimeType": "application/zip",
            "size": 12345,
        },
        {"uri": "workspace:/workspace/notes.txt", "name": "notes.txt"},
    ]
    r = await client.post(
        f"/workspaces/{ws_id}/notify",
        json={"message": message, "attachments": attachments},
        headers=_bearer(tok),
    )
    assert r.status_code == 200
    assert r.json() == {"status": "sent"}

    [ev] = [e for e in seen if e.event == "AGENT_MESSAGE"]
    assert ev.workspace_id == ws_id
    assert ev.payload == {
        "message": message,
        "workspace_id": ws_id,
        "name": "Designer",
        "attachments": attachments,
    }
    assert [e for e in seen if e.event == "ACTIVITY_LOGGED"] == []  # the row is not announced

    r = await client.get(
        f"/workspaces/{ws_id}/activity",
        params={"type": "a2a_receive", "source": "canvas"},
        headers=_bearer(tok),
    )
    [item] = r.json()
    assert item["method"] == "notify"
    assert item["source_id"] is None
    assert item["status"] == "ok"
    assert item["summary"] == "Agent message: " + message.encode()[:80].decode() + "..."
    assert item["response_body"] == {
        "result": message,
        "parts": [{"kind": "file", "file": a} for a in attachments],
    }
    assert "request_body" not in item


async def test_notify_without_attachments(client_factory: Any) -> None:
    client, ctx, seen = await _setup(client_factory)
    ws_id, _ = await _workspace(ctx, name="Solo")
    r = await client.post(f"/workspaces/{ws_id}/notify", json={"message": "hi"}, headers=ADMIN_H)
    assert r.status_code == 200
    [ev] = [e for e in seen if e.event == "AGENT_MESSAGE"]
    assert ev.payload == {"message": "hi", "workspace_id": ws_id, "name": "Solo"}
    [row] = await _rows(ctx, ws_id)
    assert row.summary == "Agent message: hi"
    assert row.response_body == {"result": "hi"}


async def test_notify_errors(client_factory: Any) -> None:
    client, ctx, seen = await _setup(client_factory)
    ws_id, _ = await _workspace(ctx)
    removed, _ = await _workspace(ctx, status="removed", token=False)
    url = f"/workspaces/{ws_id}/notify"
    for bad in ({}, {"message": ""}, {"message": 5}, "text"):
        r = await client.post(url, json=bad, headers=ADMIN_H)
        assert r.status_code == 400, bad
        assert r.json() == {"error": "message is required"}
    r = await client.post(
        url,
        json={
            "message": "m",
            "attachments": [{"uri": "u", "name": "n"}, {"uri": "workspace:/x", "name": ""}],
        },
        headers=ADMIN_H,
    )
    assert r.status_code == 400
    assert r.json() == {"error": "attachment[1]: uri and name are required"}
    r = await client.post(url, json={"message": "m", "attachments": [{"name": "n"}]}, headers=ADMIN_H)
    assert r.json() == {"error": "attachment[0]: uri and name are required"}
    for missing in (removed, new_id(), "not-a-uuid"):
        r = await client.post(f"/workspaces/{missing}/notify", json={"message": "m"}, headers=ADMIN_H)
        assert r.status_code == 404, missing
        assert r.json() == {"error": "workspace not found"}
    assert [e for e in seen if e.event == "AGENT_MESSAGE"] == []
    assert await _rows(ctx, ws_id) == []


async def test_report_for_unknown_workspace_is_200_without_row_or_event(client_factory: Any) -> None:
    client, ctx, seen = await _setup(client_factory)
    ghost = new_id()
    r = await client.post(
        f"/workspaces/{ghost}/activity", json={"activity_type": "agent_log"}, headers=ADMIN_H
    )
    assert r.status_code == 200  # as the reference: the failed insert is logged, never surfaced
    assert r.json() == {"status": "logged"}
    assert await _rows(ctx, ghost) == []
    assert [e for e in seen if e.event == "ACTIVITY_LOGGED"] == []


async def test_log_activity_helper_and_tool_trace(client_factory: Any) -> None:
    _client, ctx, seen = await _setup(client_factory)
    ws_id, _ = await _workspace(ctx)
    trace = [{"tool": "bash", "args": "ls"}]
    async with ctx.engine.begin() as conn:  # a caller's transaction; the helper uses a savepoint
        row_id = await log_activity(
            conn,
            ctx.events,
            workspace_id=ws_id,
            activity_type="a2a_receive",
            source_id="system:test",
            method="message/send",
            summary="s",
            tool_trace=trace,
            duration_ms=7,
        )
        failed = await log_activity(conn, ctx.events, workspace_id=new_id(), activity_type="agent_log")
    assert row_id is not None
    assert failed is None
    [row] = await _rows(ctx, ws_id)
    assert row.id == row_id and row.tool_trace == trace and row.source_id == "system:test"
    [ev] = [e for e in seen if e.event == "ACTIVITY_LOGGED"]
    assert ev.payload["tool_trace"] == trace
    assert ev.payload["duration_ms"] == 7


async def test_prune_activity_deletes_only_old_rows(client_factory: Any) -> None:
    _client, ctx, _ = await _setup(client_factory)
    ws_id, _ = await _workspace(ctx)
    now = utcnow()
    async with ctx.engine.begin() as conn:
        for summary, age in (
            ("old", timedelta(days=8)),
            ("older", timedelta(days=30)),
            ("new", timedelta(days=6)),
        ):
            await conn.execute(
                sa.insert(activity_logs).values(
                    id=new_id(),
                    workspace_id=ws_id,
                    activity_type="agent_log",
                    summary=summary,
                    status="ok",
                    created_at=now - age,
                )
            )
    assert await prune_activity(ctx.engine, 7) == 2
    assert [r.summary for r in await _rows(ctx, ws_id)] == ["new"]
    assert await prune_activity(ctx.engine, 7) == 0
