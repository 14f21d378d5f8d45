"""Per-IP rate limiter (spec 03 §4): headers, 429, TCP peer only, dev-mode bypass."""

from __future__ import annotations

from tests.conftest import ClientFactory


async def test_every_response_carries_rate_limit_headers(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="5")
    first = await c.get("/health")
    missing = await c.get("/no/such/route")
    assert first.headers["x-ratelimit-limit"] == "5"
    assert first.headers["x-ratelimit-remaining"] == "4"
    assert 0 < int(first.headers["x-ratelimit-reset"]) <= 60
    assert missing.status_code == 404
    assert missing.headers["x-ratelimit-remaining"] == "3"


async def test_429_after_limit_with_retry_after(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="3")
    for _ in range(3):
        assert (await c.get("/health")).status_code == 200
    r = await c.get("/metrics")  # /health and /metrics are limited too
    assert r.status_code == 429
    body = r.json()
    assert body == {"error": "rate limit exceeded", "retry_after": body["retry_after"]}
    assert isinstance(body["retry_after"], int) and 1 <= body["retry_after"] <= 60
    assert r.headers["retry-after"] == str(body["retry_after"])
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert r.headers["x-ratelimit-limit"] == "3"
    # The limiter answers before the security-headers layer, as in the reference.
    assert "x-frame-options" not in r.headers


async def test_x_forwarded_for_is_ignored(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="2")
    a = await c.get("/health", headers={"X-Forwarded-For": "203.0.113.1"})
    b = await c.get("/health", headers={"X-Forwarded-For": "198.51.100.7"})
    third = await c.get("/health", headers={"X-Forwarded-For": "192.0.2.99", "X-Real-IP": "192.0.2.98"})
    assert a.headers["x-ratelimit-remaining"] == "1"
    assert b.headers["x-ratelimit-remaining"] == "0"  # same TCP peer, same bucket
    assert third.status_code == 429


async def test_invalid_rate_limit_falls_back_to_600(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="-4")
    assert (await c.get("/health")).headers["x-ratelimit-limit"] == "600"


async def test_dev_mode_is_unlimited(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="1", MOLECULE_ENV="development")
    for _ in range(3):
        r = await c.get("/health")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit"] == "unlimited"
        assert "x-ratelimit-remaining" not in r.headers


async def test_admin_token_disables_dev_mode_bypass(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="1", MOLECULE_ENV="dev", ADMIN_TOKEN="s3cret")
    assert (await c.get("/health")).status_code == 200
    assert (await c.get("/health")).status_code == 429
