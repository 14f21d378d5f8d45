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
SKIP_PATHS = re.compile(r"/(events/stream|mcp/stream|terminal|transcript)$|^/ws$|/events/stream$")


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route, path, methods in effective_routes(app):
        if not isinstance(route, APIRoute) or SKIP_PATHS.search(path):
            continue
        for method in sorted(methods or ()):
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method, path))
    return out


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


@pytest.mark.timeout(600)
async def test_no_route_answers_500_to_bad_input(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, MAX_BODY_BYTES=64 * 1024)
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    routes = _routes(client.app)  # type: ignore[attr-defined]
    assert len(routes) > 30, "route discovery found too few routes"
    failures: list[str] = []

    async def probe(method: str, path: str, content: bytes | None, label: str) -> None:
        try:
            r = await client.request(method, path, content=content, headers=headers, timeout=20)
        except httpx.TimeoutException:
            failures.append(f"{method} {path} [{label}]: timed out")
            return
        if r.status_code >= 500 and r.status_code not in (501, 502, 503):
            failures.append(f"{method} {path} [{label}]: {r.status_code} {r.text[:200]}")
        elif r.status_code >= 400:
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if not isinstance(body, dict) or ("error" not in body and not NO_ERROR_KEY.search(path)):
                failures.append(f"{method} {path} [{label}]: {r.status_code} without an error body")
            elif "Traceback" in r.text or "sqlalchemy" in r.text.lower():
                failures.append(f"{method} {path} [{label}]: leaks internals: {r.text[:200]}")

    for method, template in routes:
        for bad_id in BAD_IDS:
            path = _fill(template, bad_id)
            if method in ("POST", "PUT", "PATCH"):
                for label, body in BODIES:
                    await probe(method, path, body, f"id={bad_id} body={label}")
            else:
                await probe(method, path, None, f"id={bad_id}")
        if method in ("POST", "PUT", "PATCH"):
            await probe(method, _fill(template, str(uuid.uuid4())), b"x" * (65 * 1024), "oversized")
    assert not failures, f"{len(failures)} bad-input responses:\n" + "\n".join(failures[:60])
