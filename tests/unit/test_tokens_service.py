"""Pure rules of the token service: paging params, org-token names and provenance, test-token gate."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workspace_server.auth.deps import AuthInfo
from workspace_server.auth.ratelimit import FixedWindowLimiter
from workspace_server.common.errors import ApiError
from workspace_server.config import Settings
from workspace_server.tokens import service


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        (None, None, (50, 0)),
        ("1", "0", (1, 0)),
        ("200", "7", (200, 7)),
        ("+5", "+2", (5, 2)),
        ("0", "-1", (50, 0)),
        ("201", "x", (50, 0)),
        ("1.5", " 3", (50, 0)),
        ("", "", (50, 0)),
    ],
)
def test_page_params(limit: str | None, offset: str | None, expected: tuple[int, int]) -> None:
    assert service.page_params(limit, offset) == expected


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"", ""),
        (b"{not json", ""),
        (b"[1,2]", ""),
        (b'{"name": 5}', ""),
        (b'{"name": "ci"}', "ci"),
        (b'{"name": "' + b"x" * 100 + b'"}', "x" * 100),
        ('{"name": "' + "é" * 100 + '"}', "é" * 100),  # characters, not bytes
    ],
)
def test_org_token_name(raw: bytes | str, name: str) -> None:
    data = raw.encode() if isinstance(raw, str) else raw
    assert service.parse_org_token_name(data) == name


def test_org_token_name_too_long() -> None:
    with pytest.raises(ApiError) as exc:
        service.parse_org_token_name(b'{"name": "' + b"x" * 101 + b'"}')
    assert (exc.value.status, exc.value.body) == (400, {"error": "name too long (max 100 chars)"})


def test_provenance() -> None:
    org = AuthInfo("org_token", org_token_id="t1", org_token_prefix="abcdefgh", org_id="org-1")
    assert service._provenance(org, cookie_present=True) == ("org-token:abcdefgh", "org-1")
    for kind in ("admin_token", "open", "dev", "session"):
        assert service._provenance(AuthInfo(kind), cookie_present=True) == ("session", None)
        assert service._provenance(AuthInfo(kind), cookie_present=False) == ("admin-token", None)


def _ctx(**settings: Any) -> Any:
    return SimpleNamespace(
        settings=Settings(**settings),
        mint_limiter=FixedWindowLimiter(service.MINT_RATE, service.MINT_INTERVAL),
    )


@pytest.mark.parametrize(
    ("settings", "auth", "status"),
    [
        ({}, "", None),
        ({"MOLECULE_ENV": "staging"}, "", None),
        ({"MOLECULE_ENV": "production"}, "", 404),
        ({"MOLECULE_ENV": "prod"}, "", 404),
        ({"MOLECULE_ENV": "production", "MOLECULE_ENABLE_TEST_TOKENS": "1"}, "", None),
        ({"MOLECULE_ENV": "production", "MOLECULE_ENABLE_TEST_TOKENS": "true"}, "", 404),
        ({"ADMIN_TOKEN": "s3cret"}, "", 401),
        ({"ADMIN_TOKEN": "s3cret"}, "Bearer wrong", 401),
        ({"ADMIN_TOKEN": "s3cret"}, "Bearer ", 401),
        ({"ADMIN_TOKEN": "s3cret"}, "Bearer s3cret", None),
        ({"ADMIN_TOKEN": "s3cret"}, "s3cret", None),
        ({"ADMIN_TOKEN": "s3cret"}, "bearer s3cret", 401),
    ],
)
def test_test_token_gate(settings: dict[str, str], auth: str, status: int | None) -> None:
    ctx = _ctx(**settings)
    if status is None:
        service.check_test_token_access(ctx, auth)
        return
    with pytest.raises(ApiError) as exc:
        service.check_test_token_access(ctx, auth)
    assert exc.value.status == status
    assert exc.value.body == {"error": "not found" if status == 404 else "admin auth required"}


def test_mint_limiter_per_ip_and_off_in_dev() -> None:
    ctx = _ctx()
    for _ in range(10):
        service.check_mint_limit(ctx, "10.0.0.1")
    with pytest.raises(ApiError) as exc:
        service.check_mint_limit(ctx, "10.0.0.1")
    assert exc.value.status == 429
    assert exc.value.body["error"] == "rate limit exceeded"
    assert exc.value.headers["Retry-After"] == str(exc.value.body["retry_after"])
    service.check_mint_limit(ctx, "10.0.0.2")  # another address has its own bucket

    dev = _ctx(MOLECULE_ENV="dev")
    for _ in range(20):
        service.check_mint_limit(dev, "10.0.0.1")
