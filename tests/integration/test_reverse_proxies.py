"""The `/cp/*` and canvas reverse proxies (spec 06 §1.4, proxy/) against a local upstream on loopback,
through a real server: the path allow-list, header rules both ways (hop-by-hop dropped, credentials
stripped, Set-Cookie kept apart), streaming, the egress policy, and 502 when the upstream is away."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, make_settings
from tests.integration.stub_http import StubHandler, StubServer
from workspace_server.app import create_app
from workspace_server.proxy.service import cp_path_allowed

ADMIN = "proxy-admin"
# ends a hang, times nothing: httpx's 5 s default once ran out in CI on a server's first proxied request
CLIENT_TIMEOUT = 30.0


class Upstream(StubServer):
    """Records every request; answers with a body, two cookies and hop-by-hop headers; `/stream` sends
    its second chunk only once the test has seen the first."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.first_chunk_read = threading.Event()
        stub = self

        class Handler(StubHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.seen.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                if self.path.endswith("/stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()  # HTTP/1.0, no length: the body ends when the connection closes
                    self.wfile.write(b"data: one\n\n")
                    self.wfile.flush()
                    stub.first_chunk_read.wait(10)
                    self.wfile.write(b"data: two\n\n")
                    return
                self.send_response(201)
                for k, v in (
                    ("Content-Type", "application/json"),
                    ("Content-Length", "11"),
                    ("Set-Cookie", "a=1; Path=/"),
                    ("Set-Cookie", "b=2; Path=/"),
                    ("Connection", "X-Up-Hop"),
                    ("X-Up-Hop", "secret"),
                    ("Keep-Alive", "timeout=5"),
                    ("X-Upstream", "yes"),
                ):
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(b'{"ok":true}')

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        super().__init__(Handler)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.first_chunk_read.set()
    up.close()


def dead_url() -> str:
    srv = StubServer(BaseHTTPRequestHandler)
    url = srv.url
    srv.close()
    return url


Factory = Callable[..., LiveServer]


def test_cp_allow_list_table() -> None:
    allowed = ["/cp/auth/me", "/cp/auth/tenant-member", "/cp/orgs", "/cp/orgs/acme/provision-status"]
    allowed += ["/cp/billing/checkout", "/cp/templates", "/cp/templates/starter", "/cp/legal/terms"]
    refused = ["/cp/admin/orgs", "/cp/workspaces/provision", "/cp/internal/usage", "/cp/tenants/config"]
    refused += ["/cp/", "/cp", "/x", "/cp/auth", "/cp/authsomething", "/cp/orgsabc", "/cp/billing/"]
    refused += [
        "/cp/auth/../admin/orgs",
        "/cp/orgs/./x",
        "/cp/auth/x\\..\\admin",
        "/cp/orgs/..",
        "/cp/orgs/a\x00",
    ]
    assert [p for p in allowed if not cp_path_allowed(p)] == []
    assert [p for p in refused if cp_path_allowed(p)] == []


async def test_cp_proxy_forwards_and_strips(live_server_factory: Factory, upstream: Upstream) -> None:
    srv = live_server_factory(CP_UPSTREAM_URL=upstream.url)
    async with httpx.AsyncClient(base_url=srv.url, timeout=CLIENT_TIMEOUT) as c:
        r = await c.post(
            "/cp/orgs/acme?x=1&y=%2F",
            content=b'{"name":"acme"}',
            headers={
                "Content-Type": "application/json",
                "Cookie": "cp_session=abc",
                "Authorization": f"Bearer {ADMIN}",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "drop me",
                "Proxy-Authorization": "Basic eA==",
                "X-Forwarded-For": "6.6.6.6",
                "X-Keep": "yes",
            },
        )
    assert (r.status_code, r.content) == (201, b'{"ok":true}')
    assert r.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.headers["x-upstream"] == "yes"
    assert "x-up-hop" not in r.headers and "keep-alive" not in r.headers
    [seen] = upstream.seen
    h = {k.lower(): v for k, v in seen["headers"].items()}
    assert (seen["method"], seen["path"], seen["body"]) == (
        "POST",
        "/cp/orgs/acme?x=1&y=%2F",
        b'{"name":"acme"}',
    )
    assert h["cookie"] == "cp_session=abc"  # the CP session is what this proxy is for
    assert "authorization" not in h  # our admin/workspace bearer never reaches the control plane
    assert "x-hop" not in h and "proxy-authorization" not in h
    assert h["x-forwarded-for"] == "127.0.0.1"  # the TCP peer; the client's own claim is not passed on
    assert h["host"] == upstream.url.removeprefix("http://")
    assert h["x-keep"] == "yes"


async def test_cp_refused_paths_never_reach_upstream(
    live_server_factory: Factory, upstream: Upstream
) -> None:
    srv = live_server_factory(CP_UPSTREAM_URL=upstream.url)
    async with httpx.AsyncClient(base_url=srv.url, timeout=CLIENT_TIMEOUT) as c:
        for path in ("/cp/admin/orgs", "/cp/auth", "/cp/orgsabc", "/cp/", "/cp/auth/%2E%2E/admin/orgs"):
            r = await c.get(path, headers={"Cookie": "cp_session=abc"})
            assert (r.status_code, r.json()) == (404, {"error": "not found"}), path
    assert upstream.seen == []


async def test_streaming_and_upstream_down(live_server_factory: Factory, upstream: Upstream) -> None:
    srv = live_server_factory(CP_UPSTREAM_URL=upstream.url)
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
        async with c.stream("GET", "/cp/auth/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
            chunks = r.aiter_raw()
            first = await anext(chunks)
            assert first == b"data: one\n\n"  # arrived while the upstream still holds the second chunk
            upstream.first_chunk_read.set()
            rest = b"".join([c async for c in chunks])
            assert rest == b"data: two\n\n"

    down = live_server_factory(CP_UPSTREAM_URL=dead_url(), CANVAS_PROXY_URL=dead_url())
    async with httpx.AsyncClient(base_url=down.url, timeout=CLIENT_TIMEOUT) as c:
        r = await c.get("/cp/auth/me")
        assert (r.status_code, r.text) == (502, "control plane unavailable")
        r = await c.get("/login")
        assert (r.status_code, r.text) == (502, "canvas unavailable")


async def test_canvas_fallback(live_server_factory: Factory, upstream: Upstream) -> None:
    srv = live_server_factory(CANVAS_PROXY_URL=upstream.url)
    async with httpx.AsyncClient(base_url=srv.url, timeout=CLIENT_TIMEOUT) as c:
        r = await c.get(
            "/workspaces/abc/page?tab=chat",
            headers={"Authorization": "Bearer tok", "Cookie": "s=1", "Accept": "text/html"},
        )
        assert r.status_code == 201 and r.headers["x-upstream"] == "yes"
        assert "content-security-policy" in r.headers  # the middleware still runs in front of the canvas
        r = await c.get("/cp/auth/me")  # no CP configured: an unmatched path, so the canvas
        assert r.status_code == 201
        r = await c.get("/health")  # a real route is never proxied
        assert r.json() == {"status": "ok"}
    first, second = upstream.seen
    h = {k.lower(): v for k, v in first["headers"].items()}
    assert first["path"] == "/workspaces/abc/page?tab=chat"
    assert "authorization" not in h and "cookie" not in h  # #451: no credential reaches the canvas
    assert h["accept"] == "text/html"
    assert second["path"] == "/cp/auth/me"

    plain = live_server_factory()
    async with httpx.AsyncClient(base_url=plain.url, timeout=CLIENT_TIMEOUT) as c:
        for path in ("/nope", "/cp/auth/me"):
            r = await c.get(path)
            assert (r.status_code, r.json()) == (404, {"error": "not found"})


async def test_upstreams_go_through_the_egress_policy(
    live_server_factory: Factory, upstream: Upstream
) -> None:
    # production mode: loopback is not dialed unless the operator lists it
    srv = live_server_factory(ADMIN_TOKEN=ADMIN, CP_UPSTREAM_URL=upstream.url, CANVAS_PROXY_URL=upstream.url)
    async with httpx.AsyncClient(base_url=srv.url, timeout=CLIENT_TIMEOUT) as c:
        assert (await c.get("/cp/auth/me")).status_code == 502
        assert (await c.get("/page")).status_code == 502
    assert upstream.seen == []
    port = upstream.url.rsplit(":", 1)[1]
    listed = live_server_factory(
        ADMIN_TOKEN=ADMIN, CP_UPSTREAM_URL=upstream.url, EGRESS_ALLOW_CIDRS=f"127.0.0.1/32:{port}"
    )
    async with httpx.AsyncClient(base_url=listed.url, timeout=CLIENT_TIMEOUT) as c:
        assert (await c.get("/cp/auth/me")).status_code == 201


@pytest.mark.parametrize(
    "env",
    [
        {"CP_UPSTREAM_URL": "ftp://cp.example"},
        {"CP_UPSTREAM_URL": "https://"},
        {"CP_UPSTREAM_URL": "https://user:pw@cp.example"},
        {"CANVAS_PROXY_URL": "http://canvas.example/sub/path"},
        {"CANVAS_PROXY_URL": "not a url"},
    ],
)
def test_bad_upstream_url_stops_the_start(db_url: str, tmp_path: Any, env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        create_app(make_settings(db_url, tmp_path, **env))
