"""The auth classes of spec 03 §3 exercised through real routes:

- AdminAuth      → GET /org/tokens
- WorkspaceAuth  → GET /workspaces/:id/tokens
- CanvasOrBearer → PUT /canvas/viewport
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory, free_port
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.engine import make_engine
from workspace_server.db.schema import workspaces
from workspace_server.tokens import store as token_store
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
ADMIN_PATH = "/org/tokens"
VIEWPORT = {"x": 1, "y": 2, "zoom": 1.5}


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def ws_path(ws_id: str) -> str:
    return f"/workspaces/{ws_id}/tokens"


def engine_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx.engine  # type: ignore[attr-defined]


async def make_ws(client: httpx.AsyncClient, *, token: bool = True) -> tuple[str, str]:
    """A workspace row and (optionally) one live token for it."""
    ws_id = new_id()
    async with engine_of(client).begin() as conn:
        await insert_workspace(conn, id=ws_id, name=f"ws-{ws_id[:6]}", status="online")
        tok = await issue_workspace_token(conn, ws_id) if token else ""
    return ws_id, tok


async def make_org_token(client: httpx.AsyncClient) -> str:
    async with engine_of(client).begin() as conn:
        _, tok = await token_store.insert_org_token(conn, name="t", created_by="admin-token", org_id=None)
    return tok


# ---------------------------------------------------------------- AdminAuth


async def test_fresh_install_fails_open(client: httpx.AsyncClient) -> None:
    r = await client.get(ADMIN_PATH)
    assert r.status_code == 200
    # org tokens do not count as "tokens exist": the window stays open
    await make_org_token(client)
    assert (await client.get(ADMIN_PATH)).status_code == 200
    # the first workspace token closes it
    await make_ws(client)
    r = await client.get(ADMIN_PATH)
    assert r.status_code == 401
    assert r.json() == {"error": "admin auth required"}


async def test_admin_token_set_with_zero_tokens_is_still_closed(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await client.get(ADMIN_PATH)
    assert r.status_code == 401
    assert r.json() == {"error": "admin auth required"}
    r = await client.get(ADMIN_PATH, headers=bearer("nope"))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid admin auth token"}
    assert (await client.get(ADMIN_PATH, headers=bearer(ADMIN))).status_code == 200


async def test_workspace_token_as_admin_only_without_admin_token(client_factory: ClientFactory) -> None:
    open_client = await client_factory()
    _, tok = await make_ws(open_client)
    assert (await open_client.get(ADMIN_PATH, headers=bearer(tok))).status_code == 200  # ADR-001
    r = await open_client.get(ADMIN_PATH, headers=bearer("garbage"))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid admin auth token"}

    strict = await client_factory(ADMIN_TOKEN=ADMIN)  # same database, ADMIN_TOKEN now set (#684)
    r = await strict.get(ADMIN_PATH, headers=bearer(tok))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid admin auth token"}


async def test_dev_mode_open_but_closed_by_admin_token_or_production(client_factory: ClientFactory) -> None:
    dev = await client_factory(MOLECULE_ENV=" Development ")
    ws, _ = await make_ws(dev)  # tokens exist, so only dev mode explains a pass
    assert (await dev.get(ADMIN_PATH)).status_code == 200
    assert (await dev.get(ADMIN_PATH, headers=bearer("bad"))).status_code == 200  # even a bad bearer
    assert (await dev.get(ws_path(ws))).status_code == 200
    # WorkspaceAuth: a presented bearer is still checked (no fallthrough to dev mode)
    r = await dev.get(ws_path(ws), headers=bearer("bad"))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid workspace auth token"}

    for overrides in ({"MOLECULE_ENV": "dev", "ADMIN_TOKEN": ADMIN}, {"MOLECULE_ENV": "production"}):
        closed = await client_factory(**overrides)
        r = await closed.get(ADMIN_PATH)
        assert r.status_code == 401, overrides
        assert r.json() == {"error": "admin auth required"}
        r = await closed.get(ws_path(ws))
        assert r.status_code == 401, overrides
        assert r.json() == {"error": "missing workspace auth token"}


# ---------------------------------------------------------------- WorkspaceAuth


async def test_workspace_token_bound_to_its_workspace(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    a, tok_a = await make_ws(client)
    b, _ = await make_ws(client)
    assert (await client.get(ws_path(a), headers=bearer(tok_a))).status_code == 200
    r = await client.get(ws_path(b), headers=bearer(tok_a))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid workspace auth token"}
    r = await client.get(ws_path(a))
    assert r.status_code == 401
    assert r.json() == {"error": "missing workspace auth token"}
    assert (await client.get(ws_path(b), headers=bearer(ADMIN))).status_code == 200


async def test_removed_workspace_token_is_dead(client: httpx.AsyncClient) -> None:
    ws, tok = await make_ws(client)
    await make_ws(client)  # another live token keeps AdminAuth closed
    assert (await client.get(ws_path(ws), headers=bearer(tok))).status_code == 200
    async with engine_of(client).begin() as conn:
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == ws).values(status="removed"))
    r = await client.get(ws_path(ws), headers=bearer(tok))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid workspace auth token"}
    r = await client.get(ADMIN_PATH, headers=bearer(tok))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid admin auth token"}


async def test_org_token_is_admin_and_reaches_every_workspace(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    a, _ = await make_ws(client)
    b, _ = await make_ws(client, token=False)
    org = await make_org_token(client)
    assert (await client.get(ADMIN_PATH, headers=bearer(org))).status_code == 200
    for ws in (a, b):
        assert (await client.get(ws_path(ws), headers=bearer(org))).status_code == 200
    # …but not CanvasOrBearer (spec 03 §3)
    r = await client.put("/canvas/viewport", json=VIEWPORT, headers=bearer(org))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid admin auth token"}


async def test_same_origin_canvas_only_with_canvas_proxy(client_factory: ClientFactory) -> None:
    plain = await client_factory()
    ws, _ = await make_ws(plain)
    referer = {"Referer": "http://testserver/canvas"}
    assert (await plain.get(ws_path(ws), headers=referer)).status_code == 401

    proxied = await client_factory(CANVAS_PROXY_URL="http://127.0.0.1:3000")
    for headers in (
        {"Referer": "http://testserver/canvas"},
        {"Referer": "http://testserver"},
        {"Origin": "http://testserver"},
    ):
        assert (await proxied.get(ws_path(ws), headers=headers)).status_code == 200, headers
    for headers in (
        {"Referer": "http://testserver.evil.com/"},  # suffix attack: needs the trailing slash
        {"Referer": "http://testserverx/"},
        {"Referer": "https://evil.com/?http://testserver/"},
    ):
        r = await proxied.get(ws_path(ws), headers=headers)
        assert r.status_code == 401, headers
        assert r.json() == {"error": "missing workspace auth token"}


# ---------------------------------------------------------------- session cookie


@dataclass
class FakeControlPlane:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def fake_cp() -> Iterator[FakeControlPlane]:
    """A control plane on a loopback port answering /cp/auth/tenant-member by cookie."""
    port = free_port()
    cp = FakeControlPlane(url=f"http://127.0.0.1:{port}")
    answers = {
        "session=member": {"member": True, "user_id": "user-1"},
        "session=outsider": {"member": False, "user_id": "user-2"},
        "session=nouser": {"member": True, "user_id": ""},
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            cookie = self.headers.get("Cookie", "")
            cp.seen.append(
                {
                    "path": parts.path,
                    "query": parse_qs(parts.query),
                    "cookie": cookie,
                    "ua": self.headers.get("User-Agent"),
                }
            )
            body = json.dumps(answers.get(cookie, {"member": False})).encode()
            self.send_response(200 if parts.path == "/cp/auth/tenant-member" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield cp
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


# ADMIN_TOKEN is production mode for the egress policy (issue 11 §2): the fake control plane listens on
# loopback, so the operator lists it
CP_ON_LOOPBACK = {"ADMIN_TOKEN": ADMIN, "EGRESS_ALLOW_CIDRS": "127.0.0.1/32"}


async def test_session_cookie_member_passes_admin_auth(
    client_factory: ClientFactory, fake_cp: FakeControlPlane
) -> None:
    client = await client_factory(**CP_ON_LOOPBACK, MOLECULE_ORG_SLUG="acme", CP_UPSTREAM_URL=fake_cp.url)
    r = await client.get(ADMIN_PATH, headers={"Cookie": "session=member"})
    assert r.status_code == 200
    assert fake_cp.seen[0] == {
        "path": "/cp/auth/tenant-member",
        "query": {"slug": ["acme"]},
        "cookie": "session=member",
        "ua": "molecule-tenant-platform/session-verifier",
    }
    # a verified session does not open WorkspaceAuth (sessions are not consulted there)
    ws, _ = await make_ws(client)
    r = await client.get(ws_path(ws), headers={"Cookie": "session=member"})
    assert r.status_code == 401


@pytest.mark.parametrize("cookie", ["session=outsider", "session=nouser", "session=unknown"])
async def test_session_cookie_non_member_falls_through(
    client_factory: ClientFactory, fake_cp: FakeControlPlane, cookie: str
) -> None:
    client = await client_factory(**CP_ON_LOOPBACK, MOLECULE_ORG_SLUG="acme", CP_UPSTREAM_URL=fake_cp.url)
    r = await client.get(ADMIN_PATH, headers={"Cookie": cookie})
    assert r.status_code == 401
    assert r.json() == {"error": "admin auth required"}
    # falling through means a valid bearer still works alongside the bad cookie
    r = await client.get(ADMIN_PATH, headers={"Cookie": cookie, **bearer(ADMIN)})
    assert r.status_code == 200
    assert len(fake_cp.seen) == 1  # the negative verdict was cached


async def test_session_needs_slug_and_upstream(
    client_factory: ClientFactory, fake_cp: FakeControlPlane
) -> None:
    client = await client_factory(**CP_ON_LOOPBACK, CP_UPSTREAM_URL=fake_cp.url)  # no MOLECULE_ORG_SLUG
    r = await client.get(ADMIN_PATH, headers={"Cookie": "session=member"})
    assert r.status_code == 401
    assert fake_cp.seen == []


async def test_unreachable_control_plane_is_not_a_pass(client_factory: ClientFactory) -> None:
    client = await client_factory(
        ADMIN_TOKEN=ADMIN, MOLECULE_ORG_SLUG="acme", CP_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}"
    )
    r = await client.get(ADMIN_PATH, headers={"Cookie": "session=member"})
    assert r.status_code == 401
    assert r.json() == {"error": "admin auth required"}


# ---------------------------------------------------------------- datastore failure


@pytest.fixture
def broken_engine() -> Iterator[Any]:
    """An engine for a Postgres port nothing listens on: every connect is refused."""
    eng = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/unreachable")
    yield eng


async def test_datastore_down_is_503_platform_unavailable(
    client_factory: ClientFactory, broken_engine: Any
) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    ws = new_id()
    real, ctx.engine = ctx.engine, broken_engine
    try:
        r = await client.get(ADMIN_PATH, headers=bearer(ADMIN))
        assert r.status_code == 503
        assert r.json() == {
            "error": "platform datastore unavailable — retry shortly",
            "code": "platform_unavailable",
        }
        # a bearer that needs a DB lookup in WorkspaceAuth: 503 as well, never a 500 with driver text
        r = await client.get(ws_path(ws), headers=bearer("some-token"))
        assert r.status_code == 503
        assert r.json()["code"] == "platform_unavailable"
        # WorkspaceAuth without a bearer makes no DB call at all (#351)
        r = await client.get(ws_path(ws))
        assert r.status_code == 401
        assert r.json() == {"error": "missing workspace auth token"}
    finally:
        ctx.engine = real
        await broken_engine.dispose()


# ---------------------------------------------------------------- CanvasOrBearer


async def test_canvas_or_bearer(client_factory: ClientFactory) -> None:
    client = await client_factory(CORS_ORIGINS="https://canvas.example.com , http://x.test")
    # zero workspace tokens: open (the open bootstrap mode; with ADMIN_TOKEN set it is not: issue 11 §3,
    # tests/integration/test_credentials.py)
    assert (await client.put("/canvas/viewport", json=VIEWPORT)).status_code == 200
    _, tok = await make_ws(client)

    r = await client.put("/canvas/viewport", json=VIEWPORT)
    assert r.status_code == 401
    assert r.json() == {"error": "admin auth required"}
    for headers in (
        bearer(tok),
        {"Origin": "https://canvas.example.com"},  # a trimmed CORS_ORIGINS entry
    ):
        r = await client.put("/canvas/viewport", json=VIEWPORT, headers=headers)
        assert r.status_code == 200, headers
    admin_client = await client_factory(
        ADMIN_TOKEN=ADMIN, CORS_ORIGINS="https://canvas.example.com , http://x.test"
    )
    r = await admin_client.put("/canvas/viewport", json=VIEWPORT, headers=bearer(ADMIN))
    assert r.status_code == 200
    r = await admin_client.put(
        "/canvas/viewport", json=VIEWPORT, headers={"Origin": "https://canvas.example.com"}
    )
    assert r.status_code == 401  # with ADMIN_TOKEN set an Origin is not a credential (issue 11 §3)
    # a bad bearer does not fall through to an allowed Origin
    r = await client.put(
        "/canvas/viewport", json=VIEWPORT, headers={**bearer("bad"), "Origin": "https://canvas.example.com"}
    )
    assert r.status_code == 401
    assert r.json() == {"error": "invalid admin auth token"}
    saved = (await client.get("/canvas/viewport")).json()
    assert (saved["x"], saved["y"], saved["zoom"]) == (1, 2, 1.5)


async def test_canvas_or_bearer_default_localhost_origins(client_factory: ClientFactory) -> None:
    # CORS_ORIGINS unset: the two localhost canvases (open bootstrap mode only since issue 11 §3)
    client = await client_factory()
    await make_ws(client)
    for origin in ("http://localhost:3000", "http://localhost:3001"):
        r = await client.put("/canvas/viewport", json=VIEWPORT, headers={"Origin": origin})
        assert r.status_code == 200, origin
    r = await client.put("/canvas/viewport", json=VIEWPORT, headers={"Referer": "http://localhost:3000/"})
    assert r.status_code == 401  # Referer alone is not an Origin, and there is no canvas proxy


async def test_canvas_or_bearer_same_origin(client_factory: ClientFactory) -> None:
    proxied = await client_factory(CANVAS_PROXY_URL="http://127.0.0.1:3000")
    await make_ws(proxied)
    r = await proxied.put("/canvas/viewport", json=VIEWPORT, headers={"Referer": "http://testserver/"})
    assert r.status_code == 200
    r = await proxied.put(
        "/canvas/viewport", json=VIEWPORT, headers={"Referer": "http://testserver.evil.com/"}
    )
    assert r.status_code == 401
