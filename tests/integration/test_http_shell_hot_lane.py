"""The hot lane (common/routing.py): the heartbeat and the A2A proxy skip FastAPI's router but not the
HTTP shell. Every middleware still applies, with the same limiter and metrics; errors render the same.
Also the access log (ACCESS_LOG), which the metrics middleware writes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.conftest import ClientFactory
from tests.integration.test_http_shell_routes import app_of, samples
from workspace_server.common.routing import HotRoute

UNKNOWN = "1b7c0c3e-0000-4000-8000-0000000000aa"
HEARTBEAT = ("/registry/heartbeat", {"workspace_id": UNKNOWN})
A2A = (f"/workspaces/{UNKNOWN}/a2a", {"jsonrpc": "2.0", "method": "message/send", "params": {}})
CANVAS = "http://canvas.example"
# what every response of the shell carries, whoever serves it
SHELL_HEADERS = {
    "x-content-type-options",
    "x-frame-options",
    "strict-transport-security",
    "referrer-policy",
    "permissions-policy",
    "content-security-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "vary",
}


@pytest.mark.parametrize(("path", "body"), [HEARTBEAT, A2A], ids=["heartbeat", "a2a"])
async def test_hot_routes_carry_every_shell_header(
    client_factory: ClientFactory, path: str, body: dict[str, object]
) -> None:
    c = await client_factory(RATE_LIMIT="5", CORS_ORIGINS=CANVAS)
    normal = await c.get("/health", headers={"Origin": CANVAS})
    hot = await c.post(path, json=body, headers={"Origin": CANVAS})
    assert SHELL_HEADERS <= set(normal.headers)
    assert SHELL_HEADERS <= set(hot.headers)
    assert hot.headers["access-control-allow-origin"] == CANVAS
    assert hot.headers["content-security-policy"] == normal.headers["content-security-policy"]
    assert (normal.headers["x-ratelimit-remaining"], hot.headers["x-ratelimit-remaining"]) == ("4", "3")


async def test_hot_routes_share_the_rate_limit(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="3")
    assert (await c.get("/health")).status_code == 200
    assert (await c.post(HEARTBEAT[0], json=HEARTBEAT[1])).status_code == 200
    assert (await c.get("/health")).status_code == 200
    for path, body in (HEARTBEAT, A2A):
        r = await c.post(path, json=body)
        assert r.status_code == 429
        assert r.json()["error"] == "rate limit exceeded"
        assert "x-frame-options" not in r.headers  # refused before the security headers, as elsewhere


async def test_foreign_origin_and_tenant_guard_refuse_hot_routes(client_factory: ClientFactory) -> None:
    c = await client_factory(CORS_ORIGINS=CANVAS)
    r = await c.post(A2A[0], json=A2A[1], headers={"Origin": "http://evil.example"})
    assert (r.status_code, r.content) == (403, b"")
    guarded = await client_factory(MOLECULE_ORG_ID="org-1")
    r = await guarded.post(A2A[0], json=A2A[1])
    assert (r.status_code, r.content) == (404, b"")
    allowed = await guarded.post(A2A[0], json=A2A[1], headers={"X-Molecule-Org-Id": "org-1"})
    assert allowed.status_code == 404 and allowed.json() == {"error": "workspace not found"}
    # the heartbeat is on the guard's allowlist
    assert (await guarded.post(HEARTBEAT[0], json=HEARTBEAT[1])).status_code == 200


async def test_body_cap_applies_to_hot_routes(client_factory: ClientFactory) -> None:
    c = await client_factory(MAX_BODY_BYTES="64")
    big = b'{"workspace_id": "' + b"x" * 100 + b'"}'
    declared = await c.post(HEARTBEAT[0], content=big, headers={"Content-Type": "application/json"})
    assert (declared.status_code, declared.json()) == (413, {"error": "request body too large"})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 20

    for path in (HEARTBEAT[0], A2A[0]):  # no Content-Length: counted as it streams, refused mid-read
        streamed = await c.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert (streamed.status_code, streamed.json()) == (413, {"error": "request body too large"})


def _hot(c: httpx.AsyncClient, path: str) -> HotRoute:
    return next(r for r in app_of(c).router.routes if isinstance(r, HotRoute) and r.path == path)


async def test_unhandled_error_in_a_hot_route_is_a_500_json(client_factory: ClientFactory) -> None:
    """Replacing the endpoint reaches only the lane (the router's copy wrapped the original when it was
    built), so this also shows that the lane, not the router, serves a full match."""
    c = await client_factory()
    route = _hot(c, "/workspaces/{id}/a2a")

    async def broken(_: Request, body: bytes) -> Response:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app_of(c), raise_app_exceptions=False)
    original, route.endpoint = route.endpoint, broken
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
            r = await raw.post(A2A[0], json=A2A[1])
    finally:
        route.endpoint = original
    assert (r.status_code, r.json()) == (500, {"error": "internal error"})
    values = samples((await c.get("/metrics")).text)
    assert values['molecule_http_requests_total{method="POST",path="/workspaces/:id/a2a",status="500"}'] == 1


async def test_api_errors_render_as_elsewhere(client_factory: ClientFactory) -> None:
    c = await client_factory()
    r = await c.post(A2A[0], json=A2A[1], headers={"X-Workspace-ID": "system:forged"})
    assert r.status_code == 403 and r.json() == {"error": r.json()["error"]} and r.json()["error"]
    wrong = await c.get(A2A[0])  # not a full match: the router's 404, as for any route
    assert (wrong.status_code, wrong.json()) == (404, {"error": "not found"})
    slash = await c.post(A2A[0] + "/", json=A2A[1], follow_redirects=False)
    assert (slash.status_code, slash.headers["location"]) == (307, A2A[0])


@pytest.mark.parametrize(
    ("setting", "logged_hot_ok"), [("on", False), ("all", True), ("off", False)], ids=["on", "all", "off"]
)
async def test_access_log(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, setting: str, logged_hot_ok: bool
) -> None:
    c = await client_factory(ACCESS_LOG=setting)
    caplog.set_level(logging.INFO, logger="workspace_server.access")
    await c.post(HEARTBEAT[0], json=HEARTBEAT[1])  # 200
    await c.post(A2A[0], json=A2A[1])  # 404: unknown workspace
    await c.get("/health?probe=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "workspace_server.access"]
    hot_ok = [line for line in lines if '"POST /registry/heartbeat HTTP/1.1" 200' in line]
    assert bool(hot_ok) is logged_hot_ok
    a2a = [line for line in lines if f'"POST {A2A[0]} HTTP/1.1" 404' in line]
    health = [line for line in lines if '"GET /health?probe=1 HTTP/1.1" 200' in line]
    expected = 0 if setting == "off" else 1
    assert (len(a2a), len(health)) == (expected, expected)
    assert all(line.startswith("127.0.0.1:40000 - ") and line.endswith("ms") for line in lines)
