"""Bad input never gets a 500: every HTTP route of the app, fed malformed bodies and ids.

The route list is read from the app itself, so a route added later is covered without editing this
file. Each request carries valid admin credentials so the payload — not auth — is what is exercised.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.conftest import ClientFactory
from workspace_server.common.routing import HotRoute
from workspace_server.middleware import effective_routes

ADMIN = "bad-input-admin"
BAD_IDS = [
    "not-a-uuid",
    "123",
    "..",
    "%3Cscript%3E",
    str(uuid.uuid4()),
    "00000000-0000-0000-0000-000000000000",
]
BODIES: list[tuple[str, bytes]] = [
    ("malformed", b'{"name": '),
    ("array", b"[1,2,3]"),
    ("scalar", b"42"),
    ("null", b"null"),
    ("wrong-types", b'{"name": 5, "tier": "x", "id": [], "url": {}, "workspace_id": 7, "message": []}'),
    ("nested-garbage", b'{"name": {"a": [null, {"b": 1e400}]}, "agent_card": "\\u0000"}'),
    ("empty", b""),
]
# routes that dial an agent or wait on a stream are exercised elsewhere; they would only time out here
# spec 01 §3: /state answers a missing row with 404 {workspace_id, deleted:true}, no "error" key
NO_ERROR_KEY = re.compile(r"/state$")
# spec 02 "Files API": a write that cannot happen is the reference's 500 `failed to write file: <err>`;
# without a workspace backend (these tests run with none) that is configuration, not bad input
_NO_BACKEND = re.compile(r'\{"error":"failed to (write file|delete): no workspace backend available"\}$')
SKIP_PATHS = re.compile(r"/(events/stream|mcp/stream|terminal|transcript)$|^/ws$|/events/stream$")


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route, path, methods in effective_routes(app):
        # HotRoute: the hot paths served ahead of FastAPI's router (common/routing.py)
        if not isinstance(route, APIRoute | HotRoute) or SKIP_PATHS.search(path):
            continue
        for method in sorted(methods or ()):
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method, path))
    return out


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


async def _probe(
    client: httpx.AsyncClient,
    failures: list[str],
    method: str,
    path: str,
    content: bytes | None,
    label: str,
    headers: dict[str, str],
) -> None:
    try:
        r = await client.request(method, path, content=content, headers=headers, timeout=20)
    except httpx.TimeoutException:
        failures.append(f"{method} {path} [{label}]: timed out")
        return
    if r.status_code >= 500 and r.status_code not in (501, 502, 503) and not _NO_BACKEND.match(r.text):
        failures.append(f"{method} {path} [{label}]: {r.status_code} {r.text[:200]}")
    elif r.status_code >= 400:
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if not isinstance(body, dict) or ("error" not in body and not NO_ERROR_KEY.search(path)):
            failures.append(f"{method} {path} [{label}]: {r.status_code} without an error body")
        elif "Traceback" in r.text or "sqlalchemy" in r.text.lower():
            failures.append(f"{method} {path} [{label}]: leaks internals: {r.text[:200]}")


@pytest.mark.timeout(600)
async def test_no_route_answers_500_to_bad_input(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, MAX_BODY_BYTES=64 * 1024)
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    routes = _routes(client.app)  # type: ignore[attr-defined]
    assert len(routes) > 30, "route discovery found too few routes"
    assert ("POST", "/registry/heartbeat") in routes and ("POST", "/workspaces/{id}/a2a") in routes
    failures: list[str] = []
    for method, template in routes:
        for bad_id in BAD_IDS:
            path = _fill(template, bad_id)
            if method in ("POST", "PUT", "PATCH"):
                for label, body in BODIES:
                    await _probe(client, failures, method, path, body, f"id={bad_id} body={label}", headers)
            else:
                await _probe(client, failures, method, path, None, f"id={bad_id}", headers)
        if method in ("POST", "PUT", "PATCH"):
            big = b"x" * (65 * 1024)
            await _probe(
                client, failures, method, _fill(template, str(uuid.uuid4())), big, "oversized", headers
            )
    assert not failures, f"{len(failures)} bad-input responses:\n" + "\n".join(failures[:60])


def _nul_body(ws_id: str) -> bytes:
    """One body for every write route: the keys they read, each string holding a NUL (unknown keys are
    ignored), so whichever a route stores reaches the database unless the route refuses it."""
    nul = "a\\u0000b"  # the JSON escape, not the character
    keys = (
        "name",
        "role",
        "current_task",
        "sample_error",
        "runtime_state",
        "summary",
        "message",
        "content",
        "task",
        "value",
        "type",
        "method",
        "error_detail",
        "prompt",
        "text",
        "key",
        "scope",
    )
    fields = ", ".join(f'"{k}": "{nul}"' for k in keys)
    return (
        f'{{"workspace_id": "{ws_id}", "id": "{ws_id}", "target_id": "{ws_id}", "activity_type": "agent_log",'
        f' "agent_card": {{"name": "{nul}"}}, "metadata": {{"{nul}": 1}}, {fields}}}'
    ).encode()


@pytest.mark.timeout(600)
async def test_nul_and_deep_nesting_on_an_existing_workspace(client_factory: ClientFactory) -> None:
    """Postgres text/jsonb cannot store NUL; Python's parser cannot follow unbounded nesting. Both are
    bad input on every write route of a workspace that exists (where a write would really happen)."""
    client = await client_factory(ADMIN_TOKEN=ADMIN, MAX_BODY_BYTES=64 * 1024)
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    created = await client.post("/workspaces", json={"name": "nul target"}, headers=headers)
    assert created.status_code == 201, created.text
    ws_id = created.json()["id"]
    failures: list[str] = []
    deep = b"[" * 20_000 + b"]" * 20_000
    for method, template in _routes(client.app):  # type: ignore[attr-defined]
        if method not in ("POST", "PUT", "PATCH"):
            continue
        path = _fill(template, ws_id)
        await _probe(client, failures, method, path, _nul_body(ws_id), "nul", headers)
        await _probe(client, failures, method, path, deep, "deep", headers)
    assert not failures, f"{len(failures)} responses:\n" + "\n".join(failures[:60])
    # the heartbeat with NUL strings was refused, not half-written
    after = await client.get(f"/workspaces/{ws_id}", headers=headers)
    assert after.json().get("current_task", "") in ("", None)
