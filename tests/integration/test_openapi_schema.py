"""The published schema (`GET /openapi.json`, `GET /docs`): served, complete, and honest about errors.

Route coverage is read from the app's own route table, so a route added later without a description
fails here rather than going unfuzzed.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import WebSocketRoute

from tests.conftest import ClientFactory
from workspace_server.common.routing import HotRoute
from workspace_server.middleware import effective_routes

ADMIN = "openapi-admin"
# write routes that take no body (an action named by the path) — every other POST/PUT/PATCH has one
NO_BODY = {
    ("post", "/workspaces/{id}/pause"),
    ("post", "/workspaces/{id}/resume"),
    ("post", "/workspaces/{id}/hibernate"),
    ("post", "/workspaces/{id}/expand"),
    ("post", "/workspaces/{id}/collapse"),
    ("post", "/workspaces/{id}/tokens"),
    ("post", "/workspaces/{id}/schedules/{schedule_id}/run"),
    ("post", "/admin/a2a-queue/drop-stale"),
    ("post", "/admin/workspace-images/refresh"),
    ("post", "/workspaces/{id}/channels/{channel_id}/test"),  # sends a fixed text; no body read
}


async def _doc(c: httpx.AsyncClient) -> dict[str, Any]:
    r = await c.get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def _template(path: str) -> str:
    return re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", path)


async def test_schema_and_docs_are_served_openly_in_production(client_factory: ClientFactory) -> None:
    c = await client_factory(ADMIN_TOKEN=ADMIN)
    doc = await _doc(c)  # no credential
    assert doc["openapi"].startswith("3.")
    docs = await c.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text and "/openapi.json" in docs.text
    # Swagger UI's assets are served here (no CDN: the page works offline), under a policy that names
    # no third-party origin
    assert "http" not in docs.headers["content-security-policy"]
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")):
        assert f"/docs/{asset}" in docs.text
        r = await c.get(f"/docs/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.content) > 10_000
    # the schema does not list itself
    assert "/openapi.json" not in doc["paths"] and "/docs" not in doc["paths"]


async def test_every_route_is_described(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    app = client.app  # type: ignore[attr-defined]
    missing = []
    for route, path, methods in effective_routes(app):
        if isinstance(route, APIRoute) and not route.include_in_schema:
            continue  # /openapi.json and /docs themselves
        if isinstance(route, APIWebSocketRoute | WebSocketRoute):
            wanted = {"get"}  # a WebSocket is described as the GET that upgrades (101)
        elif isinstance(route, APIRoute | HotRoute):
            wanted = {m.lower() for m in methods or ()} - {"head", "options"}
        else:
            continue
        ops = doc["paths"].get(_template(path), {})
        missing += [f"{m.upper()} {path}" for m in sorted(wanted - set(ops))]
    assert not missing, f"routes missing from /openapi.json: {missing}"
    assert "101" in doc["paths"]["/ws"]["get"]["responses"]
    assert "101" in doc["paths"]["/workspaces/{id}/terminal"]["get"]["responses"]
    beat = doc["paths"]["/registry/heartbeat"]["post"]
    assert beat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("HeartbeatRequest")
    assert "requestBody" in doc["paths"]["/workspaces/{id}/a2a"]["post"]


async def test_every_error_status_has_the_error_schema(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    schemas = doc["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert "HTTPValidationError" not in schemas  # the server answers 400 {"error"}, never FastAPI's 422
    bad = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            for code in ("400", "404", "429", "500", "503", "4XX", "5XX"):
                if code not in responses:
                    bad.append(f"{method.upper()} {path}: no {code}")
            if "requestBody" in op and "413" not in responses:
                bad.append(f"{method.upper()} {path}: a body but no 413")
            if op.get("security") and not {"401", "403"} <= set(responses):
                bad.append(f"{method.upper()} {path}: authenticated but no 401/403")
            for code, response in responses.items():
                if code[0] in "45" and "schema" not in response.get("content", {}).get(
                    "application/json", {}
                ):
                    bad.append(f"{method.upper()} {path}: {code} without a JSON schema")
            assert "422" not in responses
    assert not bad, "\n".join(bad)


async def test_every_write_route_describes_its_body(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    missing = [
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("post", "put", "patch") and (method, path) not in NO_BODY and "requestBody" not in op
    ]
    assert not missing, f"write routes without a described body: {missing}"
    # the handler's own rules are part of the model's component (required keys, enums, patterns)
    create = doc["components"]["schemas"]["schedules.CreateBody"]
    assert set(create["required"]) == {"cron_expr", "prompt"}
    assert "pattern" in create["properties"]["cron_expr"]


async def test_deliberate_unavailable_answers_are_documented(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    paths = doc["paths"]
    assert "GITHUB_WEBHOOK_SECRET" in paths["/webhooks/github"]["post"]["responses"]["503"]["description"]
    assert "backend" in paths["/workspaces/{id}/console"]["get"]["responses"]["501"]["description"]
    refresh = paths["/admin/workspace-images/refresh"]["post"]["responses"]["503"]["description"]
    assert "docker" in refresh
    # the two error answers without an `error` key have schemas of their own
    assert (
        "anyOf"
        in paths["/workspaces/{id}/state"]["get"]["responses"]["404"]["content"]["application/json"]["schema"]
    )
    conflict = paths["/workspaces/{id}"]["delete"]["responses"]["409"]["content"]["application/json"][
        "schema"
    ]
    assert "children" in conflict["properties"]


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
async def test_schema_routes_answer_only_get(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path)
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}
