"""The MCP bridge's wire format, auth and limiter (spec 04 §5, spec 03 §4), on SQLite and Postgres."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.engine import make_engine
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
TOOLS = [
    "delegate_task",
    "delegate_task_async",
    "check_task_status",
    "list_peers",
    "get_workspace_info",
    "commit_memory",
    "recall_memory",
]


async def _workspace(engine: Any, name: str = "ws", parent_id: str | None = None) -> tuple[str, str]:
    ws_id = new_id()
    async with engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name=name, status="online", parent_id=parent_id, role="dev")
        token = await issue_workspace_token(conn, ws_id)
    return ws_id, token


def _rpc(method: str, params: Any = None, req_id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


async def _post(client: httpx.AsyncClient, ws_id: str, token: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        f"/workspaces/{ws_id}/mcp",
        content=content,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


async def test_initialize_and_notification_wire_shape(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id, token = await _workspace(client.app.state.ctx.engine)

    r = await _post(client, ws_id, token, _rpc("initialize", {"protocolVersion": "2025-06-18"}, 7))
    assert r.status_code == 200
    assert r.content == (
        b'{"jsonrpc":"2.0","id":7,"result":{"protocolVersion":"2024-11-05",'
        b'"capabilities":{"tools":{"listChanged":false}},'
        b'"serverInfo":{"name":"molecule-a2a","version":"1.0.0"}}}'
    )
    r = await _post(client, ws_id, token, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status_code == 200
    assert r.content == b'{"jsonrpc":"2.0","id":null}'


async def test_tools_list_hides_send_message_unless_enabled(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id, token = await _workspace(client.app.state.ctx.engine)
    r = await _post(client, ws_id, token, _rpc("tools/list", req_id="a"))
    body = r.json()
    assert r.status_code == 200 and body["id"] == "a" and body["jsonrpc"] == "2.0"
    assert [t["name"] for t in body["result"]["tools"]] == TOOLS
    for tool in body["result"]["tools"]:
        assert set(tool) == {"name", "description", "inputSchema"}
        assert tool["inputSchema"]["type"] == "object"
    commit = next(t for t in body["result"]["tools"] if t["name"] == "commit_memory")
    assert commit["inputSchema"]["properties"]["scope"]["enum"] == ["LOCAL", "TEAM"]

    enabled = await client_factory(ADMIN_TOKEN=ADMIN, MOLECULE_MCP_ALLOW_SEND_MESSAGE="true")
    r = await _post(enabled, ws_id, token, _rpc("tools/list"))
    names = [t["name"] for t in r.json()["result"]["tools"]]
    assert names == [*TOOLS[:5], "send_message_to_user", *TOOLS[5:]]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1,2]", b'{"method":5}', b'"x"'])
async def test_unparsable_is_http_400_parse_error(client_factory: Any, raw: bytes) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id, token = await _workspace(client.app.state.ctx.engine)
    r = await _post(client, ws_id, token, raw)
    assert r.status_code == 400
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["code"] == -32700
    assert body["error"]["message"].startswith("parse error: ")


async def test_rpc_errors(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id, token = await _workspace(client.app.state.ctx.engine)

    r = await _post(client, ws_id, token, _rpc("resources/list", req_id=3))
    assert r.status_code == 200
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32601, "message": "method not found: resources/list"},
    }
    for params in (None, "x", {"name": 5}, {"name": "list_peers", "arguments": [1]}):
        r = await _post(client, ws_id, token, _rpc("tools/call", params))
        assert r.status_code == 200
        assert r.json()["error"]["code"] == -32602, params
        assert r.json()["error"]["message"].startswith("invalid params: ")
    r = await _post(client, ws_id, token, _rpc("tools/call", {"name": "nope", "arguments": {}}))
    assert r.json()["error"] == {"code": -32000, "message": "unknown tool: nope"}


async def test_tool_call_result_shape(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id, token = await _workspace(client.app.state.ctx.engine, name="alpha")
    r = await _post(client, ws_id, token, _rpc("tools/call", {"name": "get_workspace_info"}, 9))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"jsonrpc", "id", "result"} and body["id"] == 9
    assert list(body["result"]) == ["content"]
    [item] = body["result"]["content"]
    assert item["type"] == "text"
    assert json.loads(item["text"]) == {
        "id": ws_id,
        "name": "alpha",
        "role": "dev",
        "status": "online",
        "tier": 3,
    }


async def test_auth_rules(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx
    ws_id, _ = await _workspace(ctx.engine)
    _, other_token = await _workspace(ctx.engine, "other")
    body = json.dumps(_rpc("tools/list")).encode()

    r = await client.post(f"/workspaces/{ws_id}/mcp", content=body)
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await _post(client, ws_id, other_token, _rpc("tools/list"))
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await _post(client, ws_id, ADMIN, _rpc("tools/list"))
    assert r.status_code == 200

    # dev mode lets WorkspaceAuth through without a bearer, but the MCP limiter still needs one
    dev = await client_factory(MOLECULE_ENV="development")
    r = await dev.post(f"/workspaces/{ws_id}/mcp", content=body)
    assert (r.status_code, r.json()) == (401, {"error": "missing bearer token"})
    r = await dev.get(f"/workspaces/{ws_id}/mcp/stream")
    assert (r.status_code, r.json()) == (401, {"error": "missing bearer token"})


async def test_rate_limit_per_token(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, MCP_RATE_LIMIT=3)
    ctx = client.app.state.ctx
    ws_id, token = await _workspace(ctx.engine)
    remaining = []
    for _ in range(3):
        r = await _post(client, ws_id, token, _rpc("tools/list"))
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "3"
        remaining.append(r.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]

    r = await _post(client, ws_id, token, _rpc("tools/list"))
    assert r.status_code == 429
    retry = int(r.headers["Retry-After"])
    assert r.json() == {"error": "MCP rate limit exceeded", "retry_after": retry}
    assert 1 <= retry <= 60
    assert r.headers["X-RateLimit-Remaining"] == "0"
    # the stream shares the bucket
    r = await client.get(f"/workspaces/{ws_id}/mcp/stream", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 429
    # another bearer has its own bucket
    r = await _post(client, ws_id, ADMIN, _rpc("tools/list"))
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "2"


async def test_default_limit_is_120_per_minute(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws_id = new_id()
    statuses = [(await _post(client, ws_id, ADMIN, _rpc("tools/list"))).status_code for _ in range(121)]
    assert statuses[:120] == [200] * 120
    assert statuses[120] == 429


async def test_stream_announces_endpoint(live_server_factory: Any) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    ws_id = new_id()
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with http.stream("GET", f"/workspaces/{ws_id}/mcp/stream", headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream"
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            received = b""
            async for chunk in r.aiter_bytes():
                received += chunk
                if b"\n\n" in received:
                    break
    assert received == f"event: endpoint\ndata: /workspaces/{ws_id}/mcp\n\n".encode()


async def test_sdk_client_session(live_server_factory: Any, db_url: str) -> None:
    """The `mcp` SDK's own client initialises, lists tools and calls them against the bridge."""
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    engine = make_engine(db_url)  # this test's event loop; the server's engine lives on its own
    try:
        parent, _ = await _workspace(engine, "lead")
        ws_id, token = await _workspace(engine, "dev-1", parent_id=parent)
        sibling, _ = await _workspace(engine, "dev-2", parent_id=parent)
    finally:
        await engine.dispose()

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
        url = f"{srv.url}/workspaces/{ws_id}/mcp"
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.protocol_version == "2024-11-05"
                assert (init.server_info.name, init.server_info.version) == ("molecule-a2a", "1.0.0")
                listed = await session.list_tools()
                assert [t.name for t in listed.tools] == TOOLS

                peers = await session.call_tool("list_peers", {})
                found = json.loads(peers.content[0].text)  # type: ignore[union-attr]
                assert {p["id"] for p in found} == {parent, sibling}

                saved = await session.call_tool("commit_memory", {"content": "deploy key rotates on fridays"})
                assert json.loads(saved.content[0].text)["scope"] == "LOCAL"  # type: ignore[union-attr]
                recalled = await session.call_tool("recall_memory", {"query": "FRIDAYS"})
                memories = json.loads(recalled.content[0].text)  # type: ignore[union-attr]
                assert [m["content"] for m in memories] == ["deploy key rotates on fridays"]

                with pytest.raises(MCPError) as refused:
                    await session.call_tool("commit_memory", {"content": "x", "scope": "GLOBAL"})
                assert refused.value.error.code == -32000
                assert "GLOBAL scope is not permitted" in refused.value.error.message
