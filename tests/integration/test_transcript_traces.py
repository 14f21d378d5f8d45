"""`GET /workspaces/:id/transcript` against a loopback agent, and `GET /workspaces/:id/traces`."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integration.stub_http import StubHandler, StubServer
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
AH = {"Authorization": f"Bearer {ADMIN}"}
# Production mode refuses loopback (issue 11 §2); these stubs listen on 127.0.0.1, so the operator lists it.
LOOPBACK_ALLOWED = {"ADMIN_TOKEN": ADMIN, "EGRESS_ALLOW_CIDRS": "127.0.0.1/32"}


class Upstream(StubServer):
    """A loopback HTTP server that records GETs and answers with the configured reply."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, list[str]], str | None]] = []
        self.status = 200
        self.body = b'{"lines":["hello"],"supported":true}'
        self.content_type = "application/json"
        self.extra_headers: dict[str, str] = {}
        up = self

        class Handler(StubHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                up.seen.append((parts.path, parse_qs(parts.query), self.headers.get("Authorization")))
                self.respond(up.status, up.body, up.content_type, up.extra_headers)

        super().__init__(Handler)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


async def _ws(ctx: Any, agent_card: Any = None) -> tuple[str, dict[str, str]]:
    ws_id = new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name="ws", status="online", agent_card=agent_card)
        token = await issue_workspace_token(conn, ws_id)
    return ws_id, {"Authorization": f"Bearer {token}"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_transcript_proxies_to_the_agent(client_factory: Any, upstream: Upstream) -> None:
    client = await client_factory(**LOOPBACK_ALLOWED)
    ws, h = await _ws(client.app.state.ctx, {"url": upstream.url + "/a2a/root?x=1", "name": "agent"})

    r = await client.get(
        f"/workspaces/{ws}/transcript", params={"since": "5", "limit": "2", "evil": "1"}, headers=h
    )
    assert r.status_code == 200
    assert r.content == upstream.body
    assert r.headers["content-type"] == "application/json"
    assert upstream.seen == [("/transcript", {"since": ["5"], "limit": ["2"]}, h["Authorization"])]

    # an admin token is never handed to the agent-chosen URL
    upstream.status, upstream.body, upstream.content_type = 404, b"no transcript", "text/plain"
    r = await client.get(f"/workspaces/{ws}/transcript", headers=AH)
    assert (r.status_code, r.content) == (404, b"no transcript")
    assert upstream.seen[-1] == ("/transcript", {}, None)


async def test_transcript_caps_body_and_never_follows_redirects(
    client_factory: Any, upstream: Upstream
) -> None:
    client = await client_factory(**LOOPBACK_ALLOWED)
    ws, h = await _ws(client.app.state.ctx, {"url": upstream.url})
    upstream.body = b"x" * ((1 << 20) + 5000)
    r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
    assert r.status_code == 200 and len(r.content) == 1 << 20

    upstream.status, upstream.body = 302, b"moved"
    upstream.extra_headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
    assert (r.status_code, r.content) == (302, b"moved")
    assert len(upstream.seen) == 2


async def test_transcript_errors(client_factory: Any) -> None:
    client = await client_factory(**LOOPBACK_ALLOWED)
    ctx = client.app.state.ctx

    r = await client.get(f"/workspaces/{new_id()}/transcript", headers=AH)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    for card in (None, {"name": "x"}, {"url": ""}, {"url": 5}):
        ws, h = await _ws(ctx, card)
        r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
        assert (r.status_code, r.json()) == (503, {"error": "workspace not registered (no URL on file)"}), (
            card
        )
    for bad in (
        "http://169.254.169.254/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/",
        "http://metadata/",
        "http://[fe80::1]:8000/",
        "http://[fd00::1]/",
        "ftp://example.com/",
        "http://user:pw@127.0.0.1:1/",
    ):
        ws, h = await _ws(ctx, {"url": bad})
        r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
        assert (r.status_code, r.json()) == (400, {"error": "workspace URL not allowed"}), bad
    ws, h = await _ws(ctx, {"url": "http://[::1"})
    r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "invalid workspace URL"})
    ws, h = await _ws(ctx, {"url": f"http://127.0.0.1:{_closed_port()}"})
    r = await client.get(f"/workspaces/{ws}/transcript", headers=h)
    assert (r.status_code, r.json()) == (502, {"error": "workspace unreachable"})


async def test_traces_empty_without_langfuse(client_factory: Any) -> None:
    client = await client_factory(
        ADMIN_TOKEN=ADMIN, LANGFUSE_HOST="http://127.0.0.1:1", LANGFUSE_PUBLIC_KEY="pk"
    )
    ws, h = await _ws(client.app.state.ctx)
    r = await client.get(f"/workspaces/{ws}/traces", headers=h)
    assert (r.status_code, r.content) == (200, b"[]")
    unreachable = await client_factory(
        ADMIN_TOKEN=ADMIN,
        LANGFUSE_HOST=f"http://127.0.0.1:{_closed_port()}",
        LANGFUSE_PUBLIC_KEY="pk",
        LANGFUSE_SECRET_KEY="sk",
    )
    r = await unreachable.get(f"/workspaces/{ws}/traces", headers=h)
    assert (r.status_code, r.content) == (200, b"[]")
    r = await client.get(f"/workspaces/{ws}/traces")
    assert r.status_code == 401


async def test_traces_proxy_langfuse(client_factory: Any, upstream: Upstream) -> None:
    client = await client_factory(
        **LOOPBACK_ALLOWED, LANGFUSE_HOST=upstream.url, LANGFUSE_PUBLIC_KEY="pk", LANGFUSE_SECRET_KEY="sk"
    )
    ws, h = await _ws(client.app.state.ctx)
    upstream.body = b'{"data":[{"id":"t1"}],"meta":{}}'
    r = await client.get(f"/workspaces/{ws}/traces", headers=h)
    assert (r.status_code, r.content) == (200, upstream.body)
    assert r.headers["content-type"] == "application/json"
    [(path, query, auth)] = upstream.seen
    assert path == "/api/public/traces"
    assert query == {"limit": ["20"], "orderBy": ["timestamp"], "orderDir": ["desc"], "tags": [ws]}
    assert auth == "Basic " + base64.b64encode(b"pk:sk").decode()
    upstream.status = 401
    r = await client.get(f"/workspaces/{ws}/traces", headers=h)
    assert r.status_code == 401
