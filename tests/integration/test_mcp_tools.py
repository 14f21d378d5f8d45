"""The MCP bridge's tools against real rows and a real (tiny) A2A agent on loopback (spec 04 §5)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.stub_http import StubHandler, StubServer
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import activity_logs, agent_memories
from workspace_server.events.bus import Event
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
# ADMIN_TOKEN keeps auth strict, and makes this production mode for the egress policy (issue 11 §2):
# the operator lists loopback so the proxy may dial the loopback agent
SETTINGS = {"ADMIN_TOKEN": ADMIN, "MOLECULE_ENV": "development", "EGRESS_ALLOW_CIDRS": "127.0.0.1/32"}


class Agent(StubServer):
    """A loopback A2A agent: echoes `message/send` text, or answers with a JSON-RPC error."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.fail = False
        agent = self

        class Handler(StubHandler):
            def do_POST(self) -> None:
                body = self.read_json()
                agent.requests.append((self.path, body))
                text = "".join(p.get("text", "") for p in body["params"]["message"]["parts"])
                if agent.fail:
                    reply: dict[str, Any] = {
                        "jsonrpc": "2.0",
                        "id": body["id"],
                        "error": {"code": -1, "message": "boom"},
                    }
                else:
                    msg = {
                        "kind": "message",
                        "role": "agent",
                        "parts": [{"kind": "text", "text": "echo: " + text}],
                    }
                    reply = {"jsonrpc": "2.0", "id": body["id"], "result": msg}
                self.respond(200, json.dumps(reply).encode())

        super().__init__(Handler)


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.close()


async def _ws(
    ctx: Any, name: str, parent_id: str | None = None, status: str = "online", url: str | None = None
) -> tuple[str, str]:
    ws_id = new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(
            conn, id=ws_id, name=name, role="dev", status=status, parent_id=parent_id, url=url
        )
        token = await issue_workspace_token(conn, ws_id)
    return ws_id, token


async def _call(
    client: httpx.AsyncClient, ws_id: str, token: str, name: str, args: Any = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name}
    if args is not None:
        params["arguments"] = args
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    r = await client.post(f"/workspaces/{ws_id}/mcp", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    out: dict[str, Any] = r.json()
    return out


def _text(reply: dict[str, Any]) -> str:
    assert "error" not in reply, reply
    [item] = reply["result"]["content"]
    assert item["type"] == "text"
    return str(item["text"])


def _error(reply: dict[str, Any]) -> str:
    assert reply["error"]["code"] == -32000, reply
    return str(reply["error"]["message"])


async def test_list_peers_and_info(client_factory: Any) -> None:
    client = await client_factory(**SETTINGS)
    ctx = client.app.state.ctx
    lead, _ = await _ws(ctx, "lead")
    me, token = await _ws(ctx, "me", lead)
    sib, _ = await _ws(ctx, "sib", lead)
    await _ws(ctx, "gone", lead, status="removed")
    child, _ = await _ws(ctx, "child", me)
    await _ws(ctx, "nephew", sib)

    peers = json.loads(_text(await _call(client, me, token, "list_peers")))
    assert {p["id"] for p in peers} == {lead, sib, child}
    assert all(list(p) == ["id", "name", "role", "status", "tier"] for p in peers)
    assert next(p for p in peers if p["id"] == sib) == {
        "id": sib,
        "name": "sib",
        "role": "dev",
        "status": "online",
        "tier": 3,
    }

    info = _text(await _call(client, me, token, "get_workspace_info"))
    assert info == (
        f'{{\n  "id": "{me}",\n  "name": "me",\n  "parent_id": "{lead}",\n  "role": "dev",\n'
        f'  "status": "online",\n  "tier": 3\n}}'
    )
    gone_parent, _ = await _ws(ctx, "gone-parent", status="removed")
    orphan, orphan_token = await _ws(ctx, "orphan", gone_parent)
    assert _text(await _call(client, orphan, orphan_token, "list_peers")) == "No peers found."


async def test_commit_memory_redacts_and_refuses_global(client_factory: Any) -> None:
    client = await client_factory(**SETTINGS)
    ctx = client.app.state.ctx
    me, token = await _ws(ctx, "me")

    text = _text(
        await _call(
            client, me, token, "commit_memory", {"content": "key OPENAI_API_KEY=sk-abcdef1234567890abcd ok"}
        )
    )
    saved = json.loads(text)
    assert list(saved) == ["id", "scope"] and saved["scope"] == "LOCAL"
    assert text == f'{{"id":"{saved["id"]}","scope":"LOCAL"}}'

    refused = _error(await _call(client, me, token, "commit_memory", {"content": "x", "scope": "GLOBAL"}))
    assert refused == "GLOBAL scope is not permitted via the MCP bridge — use LOCAL or TEAM"
    assert _error(await _call(client, me, token, "commit_memory", {"content": "x", "scope": "team"})) == (
        "scope must be LOCAL or TEAM"
    )
    assert _error(await _call(client, me, token, "commit_memory", {"scope": "TEAM"})) == "content is required"

    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(sa.select(agent_memories))).all()
        logged = (
            await conn.execute(
                sa.select(activity_logs).where(activity_logs.c.activity_type == "memory_write")
            )
        ).all()
    assert [(r.content, r.scope, r.namespace) for r in rows] == [("key [REDACTED:API_KEY] ok", "LOCAL", me)]
    assert [r.summary for r in logged] == [f"Memory committed [LOCAL] id={saved['id'][:8]}"]


async def test_recall_memory_scopes(client_factory: Any) -> None:
    client = await client_factory(**SETTINGS)
    ctx = client.app.state.ctx
    lead, lead_token = await _ws(ctx, "lead")
    me, token = await _ws(ctx, "me", lead)
    sib, sib_token = await _ws(ctx, "sib", lead)

    async def commit(ws: str, tok: str, content: str, scope: str = "LOCAL") -> None:
        _text(await _call(client, ws, tok, "commit_memory", {"content": content, "scope": scope}))

    await commit(me, token, "my local note")
    await commit(me, token, "my team note", "TEAM")
    await commit(sib, sib_token, "sibling team note", "TEAM")
    await commit(sib, sib_token, "sibling local note")
    await commit(lead, lead_token, "lead team note", "TEAM")

    def contents(reply: dict[str, Any]) -> set[str]:
        return {m["content"] for m in json.loads(_text(reply))}

    assert contents(await _call(client, me, token, "recall_memory", {"scope": "LOCAL"})) == {"my local note"}
    team = await _call(client, me, token, "recall_memory", {"scope": "TEAM"})
    assert contents(team) == {"my team note", "sibling team note"}
    assert contents(await _call(client, me, token, "recall_memory", {})) == {"my local note", "my team note"}
    found = json.loads(_text(await _call(client, me, token, "recall_memory", {"query": "LOCAL"})))
    assert [list(m) for m in found] == [["id", "content", "scope", "created_at"]]
    assert _text(await _call(client, me, token, "recall_memory", {"query": "%"})) == "No memories found."
    refused = _error(await _call(client, me, token, "recall_memory", {"scope": "GLOBAL"}))
    assert refused == "GLOBAL scope is not permitted via the MCP bridge — use LOCAL, TEAM, or empty"


async def test_send_message_to_user(client_factory: Any) -> None:
    off = await client_factory(**SETTINGS)
    me, token = await _ws(off.app.state.ctx, "me")
    assert _error(await _call(off, me, token, "send_message_to_user", {"message": "hi"})) == (
        "send_message_to_user is not enabled on this MCP bridge (set MOLECULE_MCP_ALLOW_SEND_MESSAGE=true)"
    )

    on = await client_factory(**SETTINGS, MOLECULE_MCP_ALLOW_SEND_MESSAGE="true")
    ctx = on.app.state.ctx
    seen: list[Event] = []
    ctx.bus.add_listener(seen.append)
    assert _error(await _call(on, me, token, "send_message_to_user", {})) == "message is required"
    assert _text(await _call(on, me, token, "send_message_to_user", {"message": "done!"})) == "Message sent."
    [event] = [e for e in seen if e.event == "AGENT_MESSAGE"]
    assert event.workspace_id == me
    assert event.payload == {"message": "done!", "name": "me", "workspace_id": me}
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(sa.select(activity_logs).where(activity_logs.c.workspace_id == me))).all()
    assert [(r.activity_type, r.method, r.response_body) for r in rows] == [
        ("a2a_receive", "notify", {"result": "done!"})
    ]


async def test_delegate_task_through_the_proxy(client_factory: Any, agent: Agent) -> None:
    client = await client_factory(**SETTINGS)
    ctx = client.app.state.ctx
    lead, _ = await _ws(ctx, "lead")
    me, token = await _ws(ctx, "me", lead)
    sib, _ = await _ws(ctx, "sib", lead, url=agent.url)
    other_root, _ = await _ws(ctx, "other-root")
    cousin, _ = await _ws(ctx, "cousin", other_root, url=agent.url)

    reply = await _call(client, me, token, "delegate_task", {"workspace_id": sib, "task": "ping"})
    assert _text(reply) == "echo: ping"
    [(path, sent)] = agent.requests
    assert path == "/"  # the agent's URL itself, as the proxy does (the reference's MCP used <url>/a2a)
    assert sent["method"] == "message/send" and sent["params"]["message"]["role"] == "user"

    agent.fail = True
    failed = await _call(client, me, token, "delegate_task", {"workspace_id": sib, "task": "again"})
    assert _text(failed) == "[error] boom"

    denied = _error(await _call(client, me, token, "delegate_task", {"workspace_id": cousin, "task": "x"}))
    assert denied == f"workspace {me} is not authorised to communicate with {cousin}"
    assert _error(await _call(client, me, token, "delegate_task", {"workspace_id": me, "task": "x"})) == (
        "self-delegation not permitted"
    )
    assert (
        _error(await _call(client, me, token, "delegate_task", {"task": "x"})) == "workspace_id is required"
    )
    assert (
        _error(await _call(client, me, token, "delegate_task", {"workspace_id": sib})) == "task is required"
    )
    assert len(agent.requests) == 2


async def test_delegate_to_unreachable_agent_is_a_tool_error(client_factory: Any) -> None:
    client = await client_factory(**SETTINGS)
    ctx = client.app.state.ctx
    me, token = await _ws(ctx, "me")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    peer, _ = await _ws(ctx, "peer", url=dead_url)
    err = _error(await _call(client, me, token, "delegate_task", {"workspace_id": peer, "task": "x"}))
    assert err == "A2A call failed: failed to reach workspace agent"


async def test_async_delegation_is_tracked(client_factory: Any, agent: Agent) -> None:
    client = await client_factory(**SETTINGS)
    ctx = client.app.state.ctx
    me, token = await _ws(ctx, "me")
    peer, _ = await _ws(ctx, "peer", url=agent.url)

    unknown = _text(
        await _call(client, me, token, "check_task_status", {"workspace_id": peer, "task_id": "t-1"})
    )
    assert unknown == '{"task_id":"t-1","status":"not_found","note":"task not tracked or not yet dispatched"}'

    text = _text(
        await _call(client, me, token, "delegate_task_async", {"workspace_id": peer, "task": "later"})
    )
    task_id = json.loads(text)["task_id"]
    assert text == f'{{"task_id":"{task_id}","status":"dispatched","target_id":"{peer}"}}'

    deadline = time.monotonic() + 30  # the delegation runs in the background; wait for its outcome
    while True:
        status = json.loads(
            _text(
                await _call(
                    client, me, token, "check_task_status", {"workspace_id": peer, "task_id": task_id}
                )
            )
        )
        if status["status"] in ("completed", "failed") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == {"result": "echo: later", "status": "completed", "target_id": peer, "task_id": task_id}
