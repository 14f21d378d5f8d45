"""Auth matrix: each route class × {no token, another workspace's token, own token, admin token}.

Workspaces A and B both hold live tokens; "own" means A's token on A's routes. Expected statuses follow
spec 03 §3 with ADMIN_TOKEN set (the production posture) and unset (the legacy posture where any
workspace token is an admin credential).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory

ADMIN = "matrix-admin-token"
VIEWPORT = {"x": 1, "y": 2, "zoom": 1}

# route class -> (method, path template, json body)
ROUTES: dict[str, tuple[str, str, Any]] = {
    "open": ("GET", "/workspaces/{a}", None),
    "admin": ("GET", "/workspaces", None),
    "workspace": ("GET", "/workspaces/{a}/activity", None),
    "canvas": ("PUT", "/canvas/viewport", VIEWPORT),
    "registry": ("POST", "/registry/heartbeat", {"workspace_id": "{a}", "active_tasks": 0}),
}

# (route class, credential) -> (status, error body or None) with ADMIN_TOKEN set
WITH_ADMIN_TOKEN = {
    ("open", "none"): (200, None),
    ("open", "other"): (200, None),
    ("open", "own"): (200, None),
    ("open", "admin"): (200, None),
    ("admin", "none"): (401, "admin auth required"),
    ("admin", "other"): (401, "invalid admin auth token"),
    ("admin", "own"): (401, "invalid admin auth token"),
    ("admin", "admin"): (200, None),
    ("workspace", "none"): (401, "missing workspace auth token"),
    ("workspace", "other"): (401, "invalid workspace auth token"),
    ("workspace", "own"): (200, None),
    ("workspace", "admin"): (200, None),
    ("canvas", "none"): (401, "admin auth required"),
    ("canvas", "other"): (200, None),
    ("canvas", "own"): (200, None),
    ("canvas", "admin"): (200, None),
    ("registry", "none"): (401, "missing workspace auth token"),
    ("registry", "other"): (401, "invalid workspace auth token"),
    ("registry", "own"): (200, None),
    ("registry", "admin"): (401, "invalid workspace auth token"),
}

# Without ADMIN_TOKEN only the admin class changes: any live workspace token is accepted (ADR-001).
WITHOUT_ADMIN_TOKEN = {
    **WITH_ADMIN_TOKEN,
    ("admin", "other"): (200, None),
    ("admin", "own"): (200, None),
    ("admin", "admin"): (401, "invalid admin auth token"),
    ("workspace", "admin"): (401, "invalid workspace auth token"),
    ("canvas", "admin"): (401, "invalid admin auth token"),
}


async def _setup(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    ids = {}
    for key, name in (("a", "Alpha"), ("b", "Beta")):
        r = await client.post("/workspaces", json={"name": name}, headers=headers)
        assert r.status_code == 201, r.text
        ids[key] = r.json()["id"]
    tokens = {}
    for key in ("a", "b"):
        # with ADMIN_TOKEN set only an admin register mints a tokenless workspace's token (issue 11 §1)
        r = await client.post(
            "/registry/register",
            json={"id": ids[key], "url": "http://localhost:9", "agent_card": {"name": key}},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        tokens[key] = r.json()["auth_token"]
    return {"a": ids["a"], "b": ids["b"], "tok_a": tokens["a"], "tok_b": tokens["b"]}


def _credential(kind: str, env: dict[str, str]) -> dict[str, str]:
    return {
        "none": {},
        "other": {"Authorization": f"Bearer {env['tok_b']}"},
        "own": {"Authorization": f"Bearer {env['tok_a']}"},
        "admin": {"Authorization": f"Bearer {ADMIN}"},
    }[kind]


def _fill(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(a=env["a"])
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    return value


@pytest.mark.parametrize("admin_token_set", [True, False], ids=["admin-token-set", "admin-token-unset"])
async def test_auth_matrix(client_factory: ClientFactory, admin_token_set: bool) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN if admin_token_set else "")
    env = await _setup(client, {"Authorization": f"Bearer {ADMIN}"} if admin_token_set else {})
    expected = WITH_ADMIN_TOKEN if admin_token_set else WITHOUT_ADMIN_TOKEN
    mismatches = []
    for (route_class, cred), (status, error) in expected.items():
        method, path, body = ROUTES[route_class]
        r = await client.request(
            method, _fill(path, env), json=_fill(body, env), headers=_credential(cred, env)
        )
        got_error = r.json().get("error") if r.status_code >= 400 else None
        if r.status_code != status or (error is not None and got_error != error):
            mismatches.append(f"{route_class}/{cred}: want {status} {error!r}, got {r.status_code} {r.text}")
    assert not mismatches, "\n".join(mismatches)
