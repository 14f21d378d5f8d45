"""Approvals (spec 05 §4) on SQLite and Postgres: bodies, events, escalation, decisions, auto-expiry, auth."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from tests.integration.registry_support import (
    Captured,
    add_workspace,
    bearer,
    ctx_of,
    mint_token,
    recorded_events,
)
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import approval_requests

ADMIN = "approvals-admin"
AH = bearer(ADMIN)
LIST_KEYS = ["action", "created_at", "decided_at", "decided_by", "id", "reason", "status", "task_id"]
PENDING_KEYS = ["action", "created_at", "id", "reason", "status", "workspace_id", "workspace_name"]
NOT_FOUND = {"error": "approval not found or already decided"}


class Org:
    """A parent with one child, each with its own token, on a fresh app."""

    def __init__(
        self, client: httpx.AsyncClient, parent: str, child: str, ph: dict[str, str], ch: dict[str, str]
    ):
        self.client, self.parent, self.child, self.ph, self.ch = client, parent, child, ph, ch


async def _org(client_factory: Any) -> Org:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(client)
    parent = await add_workspace(ctx, "Lead", status="online")
    child = await add_workspace(ctx, "Dev", status="online", parent_id=parent)
    ph = bearer(await mint_token(ctx, parent))
    ch = bearer(await mint_token(ctx, child))
    return Org(client, parent, child, ph, ch)


async def _request(client: httpx.AsyncClient, ws: str, h: dict[str, str], **body: Any) -> str:
    r = await client.post(f"/workspaces/{ws}/approvals", json=body, headers=h)
    assert r.status_code == 201, r.text
    approval_id = r.json()["approval_id"]
    assert r.text == '{"approval_id":"' + approval_id + '","status":"pending"}'
    return str(approval_id)


async def _row(client: httpx.AsyncClient, approval_id: str) -> Any:
    a = approval_requests
    async with ctx_of(client).engine.connect() as conn:
        return (await conn.execute(sa.select(a).where(a.c.id == approval_id))).first()


async def _backdate(client: httpx.AsyncClient, approval_id: str, minutes: float) -> None:
    a = approval_requests
    when = utcnow() - timedelta(minutes=minutes)
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(sa.update(a).where(a.c.id == approval_id).values(created_at=when))


async def _decide(
    client: httpx.AsyncClient, ws: str, approval_id: str, h: dict[str, str] = AH, **body: Any
) -> httpx.Response:
    return await client.post(f"/workspaces/{ws}/approvals/{approval_id}/decide", json=body, headers=h)


def _ts(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


async def test_create_records_and_escalates_to_the_parent(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    captured = Captured(ctx_of(client))

    approval_id = await _request(
        client,
        org.child,
        org.ch,
        action="deploy",
        reason="tests pass",
        task_id="t-1",
        context={"env": "prod"},
    )
    row = await _row(client, approval_id)
    assert (row.workspace_id, row.action, row.reason, row.task_id) == (
        org.child,
        "deploy",
        "tests pass",
        "t-1",
    )
    assert (row.context, row.status, row.decided_by, row.decided_at) == (
        {"env": "prod"},
        "pending",
        None,
        None,
    )

    requested = {"action": "deploy", "approval_id": approval_id, "reason": "tests pass", "task_id": "t-1"}
    escalated = {
        "action": "deploy",
        "approval_id": approval_id,
        "from_workspace_id": org.child,
        "reason": "tests pass",
    }
    assert captured.of("APPROVAL_REQUESTED") == [requested]
    assert captured.of("APPROVAL_ESCALATED") == [escalated]
    assert list(captured.of("APPROVAL_ESCALATED")[0]) == sorted(escalated)  # Go marshals maps sorted
    assert await recorded_events(ctx_of(client), org.child) == [("APPROVAL_REQUESTED", requested)]
    assert await recorded_events(ctx_of(client), org.parent) == [("APPROVAL_ESCALATED", escalated)]

    # a root workspace has no one to escalate to; omitted fields are "" and the context {}
    root_id = await _request(client, org.parent, org.ph, action="spend budget")
    row = await _row(client, root_id)
    assert (row.task_id, row.reason, row.context) == ("", "", {})
    assert len(captured.of("APPROVAL_REQUESTED")) == 2 and len(captured.of("APPROVAL_ESCALATED")) == 1
    assert captured.of("APPROVAL_REQUESTED")[1] == {
        "action": "spend budget",
        "approval_id": root_id,
        "reason": "",
        "task_id": "",
    }
    # explicit nulls are the same as omitted
    null_id = await _request(client, org.parent, org.ph, action="x", task_id=None, reason=None, context=None)
    row = await _row(client, null_id)
    assert (row.task_id, row.reason, row.context) == ("", "", {})


async def test_list_newest_first_with_exact_keys(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    first = await _request(client, org.child, org.ch, action="one", reason="r1", task_id="t1")
    second = await _request(client, org.child, org.ch, action="two")
    await _request(client, org.parent, org.ph, action="not mine")

    r = await client.get(f"/workspaces/{org.child}/approvals", headers=org.ch)
    assert r.status_code == 200
    items = r.json()
    assert [i["id"] for i in items] == [second, first]
    assert all(list(i) == LIST_KEYS for i in items)
    assert items[1] == {
        "action": "one",
        "created_at": items[1]["created_at"],
        "decided_at": None,
        "decided_by": None,
        "id": first,
        "reason": "r1",
        "status": "pending",
        "task_id": "t1",
    }
    assert (items[0]["reason"], items[0]["task_id"]) == ("", "")
    assert utcnow() - timedelta(minutes=1) < _ts(items[1]["created_at"]) <= utcnow()

    for _ in range(51):
        await _request(client, org.parent, org.ph, action="bulk")
    r = await client.get(f"/workspaces/{org.parent}/approvals", headers=org.ph)
    assert len(r.json()) == 50
    r = await client.get("/workspaces/not-a-uuid/approvals", headers=AH)
    assert (r.status_code, r.json()) == (200, [])


async def test_decide_once_with_events(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    captured = Captured(ctx_of(client))
    approve_me = await _request(client, org.child, org.ch, action="deploy")
    deny_me = await _request(client, org.child, org.ch, action="drop table")

    r = await _decide(client, org.child, approve_me, decision="approved")
    assert (r.status_code, r.text) == (200, '{"approval_id":"' + approve_me + '","status":"approved"}')
    r = await _decide(client, org.child, deny_me, decision="denied", decided_by="alice")
    assert (r.status_code, r.json()) == (200, {"approval_id": deny_me, "status": "denied"})

    assert captured.of("APPROVAL_APPROVED") == [
        {"approval_id": approve_me, "decided_by": "human", "decision": "approved"}
    ]
    assert captured.of("APPROVAL_DENIED") == [
        {"approval_id": deny_me, "decided_by": "alice", "decision": "denied"}
    ]
    events = await recorded_events(ctx_of(client), org.child)
    assert [e for e, _ in events][-2:] == ["APPROVAL_APPROVED", "APPROVAL_DENIED"]

    row = await _row(client, approve_me)
    assert (row.status, row.decided_by) == ("approved", "human")
    assert utcnow() - timedelta(minutes=1) < row.decided_at <= utcnow()
    items = {
        i["id"]: i for i in (await client.get(f"/workspaces/{org.child}/approvals", headers=org.ch)).json()
    }
    assert (items[deny_me]["status"], items[deny_me]["decided_by"]) == ("denied", "alice")
    assert _ts(items[deny_me]["decided_at"]) == (await _row(client, deny_me)).decided_at

    # a second decision finds nothing to decide, and emits nothing
    for decision in ("approved", "denied"):
        r = await _decide(client, org.child, approve_me, decision=decision)
        assert (r.status_code, r.json()) == (404, NOT_FOUND)
    assert len(captured.of("APPROVAL_APPROVED")) == 1 and len(captured.of("APPROVAL_DENIED")) == 1
    assert (await _row(client, approve_me)).status == "approved"


async def test_decide_refusals(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    approval_id = await _request(client, org.child, org.ch, action="deploy")
    bad = [
        ({}, "invalid request body"),
        ({"decision": ""}, "invalid request body"),
        ({"decision": 1}, "invalid request body"),
        ({"decision": "approved", "decided_by": 5}, "invalid request body"),
        ({"approved": True, "decided_by": "admin"}, "invalid request body"),
        ({"decision": "maybe"}, "decision must be 'approved' or 'denied'"),
        ({"decision": "APPROVED"}, "decision must be 'approved' or 'denied'"),
    ]
    for body, message in bad:
        r = await _decide(client, org.child, approval_id, **body)
        assert (r.status_code, r.json()) == (400, {"error": message}), body
    for raw in (b"{", b"[]", b'{"decision":"approved","decided_by":"\\ud800"}'):
        r = await client.post(
            f"/workspaces/{org.child}/approvals/{approval_id}/decide", content=raw, headers=AH
        )
        assert (r.status_code, r.json()) == (400, {"error": "invalid request body"}), raw

    # only a pending request of this very workspace can be decided
    for ws, aid in (
        (org.parent, approval_id),
        (org.child, new_id()),
        (org.child, "nope"),
        ("bad", approval_id),
    ):
        r = await _decide(client, ws, aid, decision="approved")
        assert (r.status_code, r.json()) == (404, NOT_FOUND), (ws, aid)

    # the requesting workspace cannot approve itself with its own token
    r = await _decide(client, org.child, approval_id, h=org.ch, decision="approved")
    assert (r.status_code, r.json()) == (
        403,
        {"error": "a workspace cannot decide its own approval requests"},
    )
    # and the parent's token does not reach the child's routes at all
    r = await _decide(client, org.child, approval_id, h=org.ph, decision="approved")
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    assert (await _row(client, approval_id)).status == "pending"


async def test_pending_list_and_auto_expiry(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    captured = Captured(ctx_of(client))
    older = await _request(client, org.child, org.ch, action="old one", reason="why")
    fresh = await _request(client, org.parent, org.ph, action="fresh one")
    decided = await _request(client, org.child, org.ch, action="decided")
    await _decide(client, org.child, decided, decision="approved")

    r = await client.get("/approvals/pending", headers=AH)
    assert r.status_code == 200
    items = r.json()
    assert [i["id"] for i in items] == [fresh, older]
    assert all(list(i) == PENDING_KEYS for i in items)
    assert items[1] == {
        "action": "old one",
        "created_at": items[1]["created_at"],
        "id": older,
        "reason": "why",
        "status": "pending",
        "workspace_id": org.child,
        "workspace_name": "Dev",
    }
    assert items[0]["workspace_name"] == "Lead"

    # nine minutes is still pending; past ten minutes the request is denied by "auto-expired"
    await _backdate(client, fresh, 9)
    await _backdate(client, older, 11)
    r = await client.get("/approvals/pending", headers=AH)
    assert [i["id"] for i in r.json()] == [fresh]
    row = await _row(client, older)
    assert (row.status, row.decided_by) == ("denied", "auto-expired")
    assert utcnow() - timedelta(minutes=1) < row.decided_at <= utcnow()
    assert captured.of("APPROVAL_DENIED") == []  # expiry emits no event (as upstream)
    r = await _decide(client, org.child, older, decision="approved")
    assert (r.status_code, r.json()) == (404, NOT_FOUND)


async def test_expiry_applies_without_polling_pending(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    stale = await _request(client, org.child, org.ch, action="stale")
    listed = await _request(client, org.child, org.ch, action="listed")
    await _backdate(client, stale, 10.5)

    # a stale request can no longer be approved late, even if /approvals/pending was never polled
    r = await _decide(client, org.child, stale, decision="approved")
    assert (r.status_code, r.json()) == (404, NOT_FOUND)
    row = await _row(client, stale)
    assert (row.status, row.decided_by) == ("denied", "auto-expired")

    # the workspace's own list shows the outcome the agent is waiting for
    await _backdate(client, listed, 30)
    items = {
        i["id"]: i for i in (await client.get(f"/workspaces/{org.child}/approvals", headers=org.ch)).json()
    }
    assert (items[listed]["status"], items[listed]["decided_by"]) == ("denied", "auto-expired")
    assert items[listed]["decided_at"] is not None


async def test_create_bad_input(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    url = f"/workspaces/{org.child}/approvals"
    for body in (
        {},
        {"action": ""},
        {"action": None},
        {"action": 5},
        {"action": "x", "task_id": 1},
        {"action": "x", "reason": ["r"]},
        {"action": "x", "context": []},
        {"action": "x", "context": "ctx"},
        {"action": "x", "context": 1},
        [],
    ):
        r = await client.post(url, json=body, headers=org.ch)
        assert (r.status_code, r.json()) == (400, {"error": "invalid request body"}), body
    for raw in (
        b"{",
        b"",
        b'{"action":"x","context":{"n":1e400}}',
        b'{"action":"x","context":{"n":NaN}}',
        b'{"action":"\\ud800"}',
        b'{"action":"a\\u0000"}',
    ):
        r = await client.post(url, content=raw, headers={**org.ch, "Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (400, {"error": "invalid request body"}), raw
    r = await client.get(url, headers=org.ch)
    assert r.json() == []
    for ws in (new_id(), "not-a-uuid"):
        r = await client.post(f"/workspaces/{ws}/approvals", json={"action": "x"}, headers=AH)
        assert (r.status_code, r.json()) == (404, {"error": "workspace not found"}), ws


async def test_auth(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    approval_id = await _request(client, org.child, org.ch, action="deploy")
    outsider = await add_workspace(ctx_of(client), "Outsider", status="online")
    oh = bearer(await mint_token(ctx_of(client), outsider))

    routes = [
        ("POST", f"/workspaces/{org.child}/approvals", {"action": "x"}),
        ("GET", f"/workspaces/{org.child}/approvals", None),
        ("POST", f"/workspaces/{org.child}/approvals/{approval_id}/decide", {"decision": "approved"}),
    ]
    for method, path, body in routes:
        r = await client.request(method, path, json=body)
        assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"}), path
        r = await client.request(method, path, json=body, headers=oh)
        assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"}), path

    # /approvals/pending is admin only: workspace tokens are not admin tokens (#180, #684)
    r = await client.get("/approvals/pending")
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    for h in (org.ch, oh, bearer("wrong")):
        r = await client.get("/approvals/pending", headers=h)
        assert (r.status_code, r.json()) == (401, {"error": "invalid admin auth token"})
    r = await client.get("/approvals/pending", headers=AH)
    assert r.status_code == 200 and [i["id"] for i in r.json()] == [approval_id]
    assert (await _row(client, approval_id)).status == "pending"


async def test_purge_removes_the_requests(client_factory: Any) -> None:
    org = await _org(client_factory)
    client = org.client
    approval_id = await _request(client, org.child, org.ch, action="deploy")
    r = await client.delete(f"/workspaces/{org.child}?confirm=true&purge=true", headers=AH)
    assert r.status_code == 200, r.text
    assert await _row(client, approval_id) is None
    assert (await client.get("/approvals/pending", headers=AH)).json() == []
