"""Security headers (spec 03 §4) and the trailing-slash redirect (spec 06 §1.1)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from workspace_server.middleware import API_CSP, UI_CSP

COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


def assert_security_headers(r: httpx.Response, csp: str) -> None:
    for name, value in COMMON.items():
        assert r.headers.get(name) == value, name
    assert r.headers["content-security-policy"] == csp


async def test_security_headers_on_success_and_on_404(client: httpx.AsyncClient) -> None:
    ok = await client.get("/health")
    assert ok.status_code == 200
    assert_security_headers(ok, API_CSP)
    missing = await client.get("/workspaces-but-not-really")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not found"}
    assert_security_headers(missing, UI_CSP)


@pytest.mark.parametrize(
    ("path", "csp"),
    [
        ("/metrics", API_CSP),
        ("/workspaces", API_CSP),
        ("/workspaces/x/y", API_CSP),
        ("/org", API_CSP),
        ("/orgs/abc/plugins/allowlist", API_CSP),
        ("/ws", API_CSP),
        ("/approvals/pending", API_CSP),
        ("/", UI_CSP),
        ("/canvas/page", UI_CSP),
        ("/organisation", UI_CSP),
        ("/healthz", UI_CSP),
    ],
)
async def test_csp_splits_api_paths_from_ui_paths(client: httpx.AsyncClient, path: str, csp: str) -> None:
    r = await client.get(path)
    assert r.headers["content-security-policy"] == csp


async def test_handler_may_override_a_security_header(client: httpx.AsyncClient) -> None:
    app: FastAPI = client.app  # type: ignore[attr-defined]

    async def framed() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"X-Frame-Options": "SAMEORIGIN"})

    app.add_api_route("/http-shell-framed", framed)
    r = await client.get("/http-shell-framed")
    assert r.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_trailing_slash_redirects_301_for_get_307_otherwise(client: httpx.AsyncClient) -> None:
    get = await client.get("/health/?x=1")
    assert get.status_code == 301
    assert get.headers["location"] == "/health?x=1"
    post = await client.post("/health/")
    assert post.status_code == 307
    assert post.headers["location"] == "/health"
    assert (await client.get("/no-such-thing/")).status_code == 404


async def test_redirect_never_points_off_site(client: httpx.AsyncClient) -> None:
    app: FastAPI = client.app  # type: ignore[attr-defined]

    async def tail(x: str) -> dict[str, str]:
        return {"x": x}

    app.add_api_route("/{x:path}/end", tail)
    r = await client.get("http://testserver//evil.example/end/")
    assert r.status_code == 301
    # A `//host` Location would be protocol-relative: a redirect to another site.
    assert r.headers["location"] == "/evil.example/end"
