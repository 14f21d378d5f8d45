"""CORS (spec 06 §1.1 item 2, gin-contrib/cors semantics)."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.conftest import ClientFactory
from workspace_server.config import Settings
from workspace_server.middleware import cors_config

PREFLIGHT_HEADERS = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,authorization",
}


async def test_allowed_origin_gets_cors_headers_and_the_response(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["vary"] == "Origin"


async def test_disallowed_origin_is_403_with_empty_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert r.content == b""
    assert "access-control-allow-origin" not in r.headers
    # CORS runs before the limiter and the security headers: neither touched this response.
    assert "x-ratelimit-limit" not in r.headers
    assert "x-frame-options" not in r.headers


async def test_preflight_from_allowed_origin_is_204_and_stops(client: httpx.AsyncClient) -> None:
    r = await client.options(
        "/no/such/route", headers={"Origin": "http://localhost:3001", **PREFLIGHT_HEADERS}
    )
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == "http://localhost:3001"
    assert r.headers["access-control-allow-methods"] == "GET,POST,PUT,PATCH,DELETE,OPTIONS"
    assert r.headers["access-control-allow-headers"] == "Origin,Content-Type,X-Workspace-Id,Authorization"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers.get_list("vary") == [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ]


async def test_preflight_from_disallowed_origin_is_403(client: httpx.AsyncClient) -> None:
    r = await client.options("/health", headers={"Origin": "http://evil.example", **PREFLIGHT_HEADERS})
    assert r.status_code == 403
    assert r.content == b""


async def test_no_origin_and_same_origin_pass_without_cors_headers(client: httpx.AsyncClient) -> None:
    plain = await client.get("/health")
    same = await client.get("/health", headers={"Origin": "http://testserver"})
    for r in (plain, same):
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers


async def test_configured_origins_are_trimmed_and_bad_entries_ignored(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        c = await client_factory(
            CORS_ORIGINS="https://app.example.com, canvas.example.com,  http://b.example"
        )
    assert "canvas.example.com" in caplog.text
    assert (await c.get("/health", headers={"Origin": "https://app.example.com"})).status_code == 200
    assert (await c.get("/health", headers={"Origin": "http://b.example"})).status_code == 200
    # The scheme-less entry is dropped rather than crashing the boot (the reference panics).
    assert (await c.get("/health", headers={"Origin": "canvas.example.com"})).status_code == 403
    # Configuring origins replaces the localhost defaults.
    assert (await c.get("/health", headers={"Origin": "http://localhost:3000"})).status_code == 403


async def test_wildcard_allows_every_origin_with_star(client_factory: ClientFactory) -> None:
    c = await client_factory(CORS_ORIGINS="*")
    r = await c.get("/health", headers={"Origin": "https://anything.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-credentials"] == "true"
    pre = await c.options("/health", headers={"Origin": "https://anything.example", **PREFLIGHT_HEADERS})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "vary" not in pre.headers


def test_cors_config_defaults_and_all_invalid() -> None:
    default = cors_config(Settings(CORS_ORIGINS=""))
    assert default.origins == {"http://localhost:3000", "http://localhost:3001"}
    assert not default.allow_all
    none_valid = cors_config(Settings(CORS_ORIGINS="foo, bar"))
    assert none_valid.origins == frozenset()
    assert not none_valid.allow_all
