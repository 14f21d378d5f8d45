"""`GET /ws` (spec 04 §3) against a real uvicorn server, with the `websockets` client, on both databases.

Events are caused over HTTP (`POST /workspaces/:id/notify` → AGENT_MESSAGE for :id). Filtering is
asserted by order, never by waiting: an event the client must not see is caused first, one it must see
second, and the first frame received has to be the second event.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.engine import make_engine
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
WAIT = 15  # a guard against hanging, never an assertion about speed


def ws_url(srv: Any) -> str:
    return srv.url.replace("http://", "ws://") + "/ws"


async def seed(
    db_url: str, tree: list[tuple[str, str | None]], tokens_for: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Insert workspaces `(name, parent name)` in order; returns name → id plus `token:<name>` entries."""
    engine = make_engine(db_url)
    out: dict[str, Any] = {}
    try:
        async with engine.begin() as conn:
            for name, parent in tree:
                out[name] = new_id()
                await insert_workspace(
                    conn, id=out[name], name=name, status="online", parent_id=out[parent] if parent else None
                )
            for name in tokens_for:
                out[f"token:{name}"] = await issue_workspace_token(conn, out[name])
    finally:
        await engine.dispose()
    return out


async def notify(
    http: httpx.AsyncClient, ws_id: str, message: str = "m", headers: dict[str, str] | None = None
) -> None:
    h = ADMIN_H if headers is None else headers
    r = await http.post(f"/workspaces/{ws_id}/notify", json={"message": message}, headers=h)
    assert r.status_code == 200, r.text


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(raw, str)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def test_canvas_client_receives_every_event_in_order(live_server_factory: Any, db_url: str) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    ids = await seed(db_url, [("a", None), ("b", None), ("child", "a")])
    async with httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http, connect(ws_url(srv)) as ws:
        assert srv.app.state.ctx.hub.client_count == 1
        for name in ("a", "b", "child"):
            await notify(http, ids[name], f"hello {name}")
        frames = [await next_frame(ws) for _ in range(3)]
        assert [f["workspace_id"] for f in frames] == [ids["a"], ids["b"], ids["child"]]
        f = frames[0]
        assert list(f) == ["event", "workspace_id", "timestamp", "payload"]
        assert f["event"] == "AGENT_MESSAGE"
        assert f["timestamp"].endswith("Z")
        assert f["payload"] == {"message": "hello a", "workspace_id": ids["a"], "name": "a"}
        await ws.send('{"subscribe":"ignored"}')  # inbound frames are read and ignored
        await notify(http, ids["b"])
        assert (await next_frame(ws))["workspace_id"] == ids["b"]


async def test_agent_client_sees_only_workspaces_it_may_talk_to(
    live_server_factory: Any, db_url: str
) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    ids = await seed(
        db_url,
        [("pm", None), ("dev", "pm"), ("fe", "dev"), ("be", "dev"), ("ops", None), ("ops_child", "ops")],
        tokens_for=("fe",),
    )
    headers = {"X-Workspace-ID": ids["fe"], "Authorization": f"Bearer {ids['token:fe']}"}
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http,
        connect(ws_url(srv), additional_headers=headers) as ws,
    ):
        await notify(http, ids["ops_child"])  # unrelated root's child: filtered out
        await notify(http, ids["be"])  # sibling: delivered
        assert (await next_frame(ws))["workspace_id"] == ids["be"]
        await notify(http, ids["ops"])  # another root, fe is not a root: filtered out
        await notify(http, ids["fe"])  # its own events
        assert (await next_frame(ws))["workspace_id"] == ids["fe"]
        await notify(http, ids["ops_child"])
        await notify(http, ids["pm"])  # grand-parent (ancestor)
        await notify(http, ids["dev"])  # parent
        assert [(await next_frame(ws))["workspace_id"] for _ in range(2)] == [ids["pm"], ids["dev"]]


async def test_agent_without_tokens_is_grandfathered(live_server_factory: Any, db_url: str) -> None:
    # the open bootstrap mode only (here dev mode, so that notify needs no credential)
    srv = live_server_factory(MOLECULE_ENV="development")
    ids = await seed(db_url, [("root1", None), ("root2", None), ("kid", "root2")])
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http,
        connect(ws_url(srv), additional_headers={"X-Workspace-ID": ids["root1"].upper()}) as ws,
    ):
        await notify(http, ids["kid"], headers={})  # another root's child: filtered
        await notify(http, ids["root2"], headers={})  # both roots: delivered
        assert (await next_frame(ws))["workspace_id"] == ids["root2"]


async def test_agent_without_tokens_needs_one_in_production(live_server_factory: Any, db_url: str) -> None:
    """Issue 11 §1: with ADMIN_TOKEN set a tokenless workspace is no unauthenticated identity."""
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    ids = await seed(db_url, [("root1", None)])
    me = {"X-Workspace-ID": ids["root1"]}
    url = ws_url(srv)
    assert await _denied(url, additional_headers=me) == (401, {"error": "missing workspace auth token"})
    bad = {**me, "Authorization": "Bearer nope"}
    assert await _denied(url, additional_headers=bad) == (401, {"error": "invalid workspace auth token"})


async def _denied(url: str, **kwargs: Any) -> tuple[int, Any]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body or b"null")


async def test_agent_token_is_checked_before_the_upgrade(live_server_factory: Any, db_url: str) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    ids = await seed(db_url, [("me", None), ("other", None)], tokens_for=("me", "other"))
    url = ws_url(srv)
    me = {"X-Workspace-ID": ids["me"]}
    assert await _denied(url, additional_headers=me) == (401, {"error": "missing workspace auth token"})
    assert await _denied(url, additional_headers={**me, "Authorization": f"Bearer {ids['token:other']}"}) == (
        401,
        {"error": "invalid workspace auth token"},
    )
    assert await _denied(url, additional_headers={**me, "Authorization": f"Bearer {ADMIN}"}) == (
        401,
        {"error": "invalid workspace auth token"},
    )
    assert await _denied(url, additional_headers={"X-Workspace-ID": "ws-123"}) == (
        400,
        {"error": "invalid workspace ID"},
    )
    assert srv.app.state.ctx.hub.client_count == 0
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http,
        connect(url, additional_headers={**me, "Authorization": f"Bearer {ids['token:me']}"}) as ws,
    ):
        await notify(http, ids["me"])
        assert (await next_frame(ws))["workspace_id"] == ids["me"]


async def test_origin_must_match_cors_origins_when_set(live_server_factory: Any, db_url: str) -> None:
    srv = live_server_factory(
        ADMIN_TOKEN=ADMIN, CORS_ORIGINS=" https://canvas.example , http://other.example"
    )
    url = ws_url(srv)
    assert (await _denied(url, origin=Origin("https://evil.example")))[0] == 403
    assert (await _denied(url))[0] == 403  # no Origin at all matches no entry, as the reference
    ids = await seed(db_url, [("w", None)])
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http,
        connect(url, origin=Origin("https://canvas.example")) as ws,
    ):
        await notify(http, ids["w"])
        assert (await next_frame(ws))["workspace_id"] == ids["w"]


async def test_closing_the_socket_unregisters_the_client(live_server_factory: Any, db_url: str) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    ids = await seed(db_url, [("w", None)])
    hub = srv.app.state.ctx.hub
    async with httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http:
        async with connect(ws_url(srv)) as ws:
            await notify(http, ids["w"])
            await next_frame(ws)
            assert hub.client_count == 1
        # The server sees the close frame; afterwards a broadcast must still succeed and a new client
        # still receives. (The gauge is read once the next connection is up, so no waiting is involved.)
        await notify(http, ids["w"])
        async with connect(ws_url(srv)) as ws2:
            await notify(http, ids["w"], "again")
            frame = await next_frame(ws2)
            assert frame["payload"]["message"] == "again"


async def test_register_emits_workspace_online(live_server_factory: Any, db_url: str) -> None:
    srv = live_server_factory(ADMIN_TOKEN=ADMIN)
    ws_id = new_id()
    card = {"name": "echo", "skills": []}
    async with httpx.AsyncClient(base_url=srv.url, timeout=WAIT) as http, connect(ws_url(srv)) as ws:
        # a new id: only an admin may register it with ADMIN_TOKEN set (issue 11 §1)
        r = await http.post(
            "/registry/register",
            json={"id": ws_id, "url": "http://localhost:8000", "agent_card": card},
            headers=ADMIN_H,
        )
        assert r.status_code == 200, r.text
        frame = await next_frame(ws)
        while frame["workspace_id"] != ws_id or frame["event"] != "WORKSPACE_ONLINE":
            frame = await next_frame(ws)
        assert frame["payload"]["agent_card"] == card
        assert frame["payload"]["url"] == "http://localhost:8000"
        r = await http.get(f"/events/{ws_id}", headers=ADMIN_H)
        assert [e["event_type"] for e in r.json()] == ["WORKSPACE_ONLINE"]
