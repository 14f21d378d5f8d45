"""Regressions for what the schemathesis run (test_openapi_fuzz.py) found, one test per finding."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.routing import APIRoute

from tests.conftest import ClientFactory
from workspace_server.common.routing import HotRoute
from workspace_server.middleware import effective_routes

ADMIN = "findings-admin"
H = {"Authorization": f"Bearer {ADMIN}"}


@pytest.mark.parametrize("source", [str(uuid.uuid4()), "not-a-uuid", "%F2%89%9F%BF"])
async def test_record_delegation_for_an_unknown_workspace_is_404(
    client_factory: ClientFactory, source: str
) -> None:
    """Negative fuzzing: an admin (or org) token passes WorkspaceAuth for any id, and recording a
    delegation for an id with no workspace row failed the activity row's foreign key: 500."""
    c = await client_factory(ADMIN_TOKEN=ADMIN)
    target = (await c.post("/workspaces", json={"name": "t", "external": True}, headers=H)).json()["id"]
    body = {"target_id": target, "task": "t", "delegation_id": "d1"}
    r = await c.post(f"/workspaces/{source}/delegations/record", json=body, headers=H)
    assert r.status_code == 404
    assert r.json() == {"error": "workspace not found"}
    # a real workspace still records
    src = (await c.post("/workspaces", json={"name": "s", "external": True}, headers=H)).json()["id"]
    ok = await c.post(f"/workspaces/{src}/delegations/record", json=body, headers=H)
    assert ok.status_code == 202
    assert ok.json() == {"delegation_id": "d1", "status": "recorded"}


# streams never end, and a WebSocket is no HTTP route; files writes without a backend are the reference's 500
SKIP = re.compile(r"/(events/stream|mcp/stream|transcript)$")
NO_BACKEND = re.compile(r'"failed to (write file|delete): no workspace backend available"')


def _routes(app: object) -> list[tuple[str, str]]:
    out = []
    for route, path, methods in effective_routes(app):
        if isinstance(route, APIRoute | HotRoute) and not SKIP.search(path):
            out += [(m, path) for m in sorted(methods or ()) if m not in ("HEAD", "OPTIONS")]
    return out


async def test_a_nul_in_the_url_is_never_a_500(client_factory: ClientFactory) -> None:
    """Fuzzing on Postgres: a U+0000 in a query parameter (memories `q`/`namespace`, session-search `q`,
    activity `type`, instructions `scope`/`workspace_id`, drop-stale `workspace_id`) or in a path
    parameter (`/events/:id`, `DELETE …/secrets/:key`) reached the database, which cannot compare it: 500.
    A URL's NUL is now refused before routing (middleware.UrlGuardMiddleware: 400 `invalid URL`). Every
    route, with a NUL in every path parameter and in the query parameters the handlers read, answers below
    500."""
    c = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = (await c.post("/workspaces", json={"name": "n", "external": True}, headers=H)).json()["id"]
    routes = _routes(c.app)  # type: ignore[attr-defined]
    assert len(routes) > 100
    query = "?" + "&".join(
        f"{k}=a%00b" for k in ("q", "namespace", "scope", "type", "workspace_id", "source")
    )
    bad = []
    for method, template in routes:
        for url in {re.sub(r"\{[^}]+\}", "a%00b", template), re.sub(r"\{[^}]+\}", ws, template) + query}:
            r = await c.request(method, url, headers=H, timeout=20)
            if (
                r.status_code >= 500
                and r.status_code not in (501, 502, 503)
                and not NO_BACKEND.search(r.text)
            ):
                bad.append(f"{method} {url}: {r.status_code} {r.text[:80]}")
    assert not bad, "\n".join(bad)
