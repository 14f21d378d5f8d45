"""Every route with a body, fed every body the server cannot keep (issue 11 §3): never a 5xx.

The routes come from the app's own route table (the hot Starlette routes included), so a route added
later is covered by being registered. Each request is made as admin against a real workspace (which
has an agent URL, so the A2A proxy gets as far as reading the body), so the body, not auth or a missing
row, is what each route judges. Each bad body carries the keys the routes read, the bad value in every
one of them, so it gets past the shape checks to wherever a route would store or forward it.

A route that refuses malformed JSON (`{"a":`) reads its body: such a route must refuse every bad body as
well (a 4xx), not store or forward it. A route that ignores its body may answer what it likes, but not
a 5xx.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute

from tests.conftest import ClientFactory
from workspace_server.common.routing import HotRoute
from workspace_server.db.schema import workspaces
from workspace_server.middleware import effective_routes

ADMIN = "bad-bodies-admin"
BODY_METHODS = ("POST", "PUT", "PATCH")
# the deliberate answers of a feature this deployment lacks (no backend, no webhook secret, …)
DELIBERATE = (501, 503)
# streams and sockets: no request body to judge
SKIP = re.compile(r"/(events/stream|mcp/stream|terminal)$|^/ws$")
# multipart, judged by its own parser (tests/integration/test_chatfiles_routes.py)
NOT_JSON = re.compile(r"/chat/uploads$")
# NUL is fine on the wire where the route keeps no text with it: the proxy forwards it (to the closed port
# here) and the activity log scrubs it; bootstrap-failed strips it from the container's log tail
KEEPS_NUL_OFF_DISK = re.compile(r"/a2a$|/bootstrap-failed$")
FORWARDS = re.compile(r"/a2a$")
# spec 02 "Files API": a write with nowhere to go (no workspace backend in these tests, no template) is the
# reference's 500; that is this deployment's configuration, not bad input
NO_BACKEND = re.compile(r'^\{"error":"failed to (write file|delete): no workspace backend available"\}$')
NO_PLACE = '{"error":"failed to write files to workspace"}'

STRING_KEYS = (
    "name",
    "role",
    "content",
    "message",
    "method",
    "task",
    "text",
    "value",
    "key",
    "scope",
    "summary",
    "prompt",
    "model",
    "runtime",
    "source",
    "template",
    "url",
    "current_task",
    "sample_error",
    "error",
    "type",
    "activity_type",
    "workflow_id",
    "namespace",
    "cron_expr",
    "decision",
    "reason",
)


def _shaped(ws_id: str, bad: str) -> bytes:
    """An object with the keys routes read, `bad` (a JSON text fragment) as every value."""
    fields = ", ".join(f'"{k}": {bad}' for k in STRING_KEYS)
    return (
        f'{{"workspace_id": "{ws_id}", "id": "{ws_id}", "target_id": "{ws_id}", "jsonrpc": "2.0",'
        f' "params": {{"name": {bad}, "message": {{"parts": [{{"text": {bad}}}]}}}},'
        f' "agent_card": {{"name": {bad}}}, "metadata": {{"k": {bad}}}, "files": {{"a.md": {bad}}},'
        f' "secrets": {{"K": {bad}}}, "data": {{"k": {bad}}}, {fields}}}'
    ).encode()


def _bad_bodies(ws_id: str) -> list[tuple[str, bytes]]:
    nested = "[" * 200 + "1" + "]" * 200
    nested_object = '{"a": ' * 200 + "1" + "}" * 200
    bodies = [
        ("lone-surrogate", _shaped(ws_id, '"\\ud800"')),
        ("lone-low-surrogate", _shaped(ws_id, '"x\\udfffy"')),
        ("nul", _shaped(ws_id, '"a\\u0000b"')),
        ("nan", _shaped(ws_id, "NaN")),
        ("infinity", _shaped(ws_id, "-Infinity")),
        ("1e400", _shaped(ws_id, "1e400")),
        ("huge-int", _shaped(ws_id, "1" + "0" * 5000)),
        ("deep-value", _shaped(ws_id, nested)),
        ("deep-object", _shaped(ws_id, nested_object)),
        ("deep-top", ("[" * 150 + "]" * 150).encode()),
        ("very-deep", ("[" * 100_000 + "]" * 100_000).encode()),
    ]
    # the raw UTF-8 bytes of an encoded surrogate (0xED 0xA0 0x80), not the escape
    bodies.append(("surrogate-bytes", _shaped(ws_id, '"x@@y"').replace(b"@@", b"\xed\xa0\x80")))
    return bodies


def _body_routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route, path, methods in effective_routes(app):
        if not isinstance(route, APIRoute | HotRoute) or SKIP.search(path) or NOT_JSON.search(path):
            continue
        out += [(m, path) for m in sorted(methods or ()) if m in BODY_METHODS]
    return out


def _fill(template: str, ws_id: str) -> str:
    path = template.replace("{id}", ws_id)
    return re.sub(r"\{([^}:]+)(:path)?\}", lambda m: "a.md" if m.group(2) else "x", path)


async def _seed(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await client.post("/workspaces", json={"name": "bad bodies"}, headers=headers)
    assert r.status_code == 201, r.text
    ws_id = str(r.json()["id"])
    # an agent URL on a closed loopback port: the A2A proxy reads the body before it would dial
    async with client.app.state.ctx.engine.begin() as conn:  # type: ignore[attr-defined]
        row = sa.update(workspaces).where(workspaces.c.id == ws_id)
        await conn.execute(row.values(url="http://127.0.0.1:9", status="online"))
    return ws_id


@pytest.mark.timeout(300)
async def test_every_body_route_refuses_every_unkeepable_body(client_factory: ClientFactory) -> None:
    # ADMIN_TOKEN set: admin auth is enforced (production mode); the egress allow-list lets the proxy dial
    # the loopback URL, so it gets as far as reading the body
    client = await client_factory(ADMIN_TOKEN=ADMIN, EGRESS_ALLOW_CIDRS="127.0.0.1/32")
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    routes = _body_routes(client.app)  # type: ignore[attr-defined]
    assert ("POST", "/registry/heartbeat") in routes and ("POST", "/workspaces/{id}/a2a") in routes
    assert ("POST", "/workspaces/{id}/mcp") in routes and len(routes) > 50, routes
    started = time.monotonic()
    failures: list[str] = []
    ws_id = await _seed(client, headers)
    for method, template in routes:
        path = _fill(template, ws_id)
        baseline = await client.request(method, path, content=b'{"a":', headers=headers)
        reads_body = 400 <= baseline.status_code < 500
        for label, body in _bad_bodies(ws_id):
            if label == "nul" and KEEPS_NUL_OFF_DISK.search(template):
                continue
            r = await client.request(method, path, content=body, headers=headers)
            where = f"{method} {template} [{label}]"
            if r.status_code >= 500 and r.status_code not in DELIBERATE:
                failures.append(f"{where}: {r.status_code} {r.text[:160]}")
            elif reads_body and r.status_code < 400:
                failures.append(f"{where}: accepted ({r.status_code} {r.text[:120]}) a body it cannot keep")
            elif r.status_code >= 400 and ("Traceback" in r.text or "error" not in r.text):
                failures.append(f"{where}: {r.status_code} without a clean error body: {r.text[:160]}")
        gone = await client.get(f"/workspaces/{ws_id}", headers=headers)
        if gone.status_code != 200 or gone.json().get("status") == "removed":
            ws_id = await _seed(client, headers)  # a route that ignores its body removed it: start again
    assert not failures, f"{len(failures)} bad-body responses:\n" + "\n".join(failures[:80])
    assert time.monotonic() - started < 120, "the route-table sweep should stay fast"


def _server_error(r: httpx.Response) -> bool:
    if r.status_code < 500 or r.status_code in DELIBERATE:
        return False
    return not (NO_BACKEND.match(r.text) or r.text == NO_PLACE)


def _long(template: str, ws_id: str, size: int) -> str:
    """Every path parameter but the workspace id `size` characters long (a path one: two components)."""
    path = template.replace("{id}", ws_id)
    half = "b" * (size // 2)
    return re.sub(r"\{([^}:]+)(:path)?\}", lambda m: f"{half}/{half}" if m.group(2) else "a" * size, path)


@pytest.mark.timeout(300)
async def test_long_names_and_paths_are_never_a_server_error(client_factory: ClientFactory) -> None:
    """Names and paths past what a file system or a column takes: a 4xx (or a plain miss), never a 5xx."""
    client = await client_factory(ADMIN_TOKEN=ADMIN, MOLECULE_ENV="development")
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    ws_id = await _seed(client, headers)
    failures: list[str] = []
    for method, template in _body_routes(client.app):  # type: ignore[attr-defined]
        if FORWARDS.search(template):
            continue  # long strings are a valid A2A message: forwarded (to the closed port: a 502)
        for size in (300, 5000):
            long = "n" * size
            body = _shaped(ws_id, f'"{long}"')
            for path in {_fill(template, ws_id), _long(template, ws_id, size)}:
                r = await client.request(method, path, content=body, headers=headers)
                if _server_error(r):
                    failures.append(f"{method} {template} [{size}]: {r.status_code} {r.text[:160]}")
        gone = await client.get(f"/workspaces/{ws_id}", headers=headers)
        if gone.status_code != 200 or gone.json().get("status") == "removed":
            ws_id = await _seed(client, headers)
    for template in ("/workspaces/{id}/files/{path:path}", "/workspaces/{id}/memory/{key}"):
        for size in (300, 5000):
            for method in ("GET", "DELETE"):
                r = await client.request(method, _long(template, ws_id, size), headers=headers)
                if _server_error(r):
                    failures.append(f"{method} {template} [{size}]: {r.status_code} {r.text[:160]}")
    assert not failures, f"{len(failures)} responses:\n" + "\n".join(failures[:80])


def _all_routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route, path, methods in effective_routes(app):
        if isinstance(route, APIRoute | HotRoute) and not SKIP.search(path):
            out += [(m, path) for m in sorted(methods or ()) if m not in ("HEAD", "OPTIONS")]
    return out


@pytest.mark.timeout(300)
async def test_nul_in_a_path_or_query_is_400_on_every_route(client_factory: ClientFactory) -> None:
    """Postgres text cannot hold NUL: a `%00` in any path parameter or query value reached the database
    and answered 500 on a dozen routes. It is refused before routing now, on every route."""
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    ws_id = await _seed(client, headers)
    routes = _all_routes(client.app)  # type: ignore[attr-defined]
    failures: list[str] = []
    for method, template in routes:
        targets = [(re.sub(r"\{[^}]+\}", "a%00b", template), {})] if "{" in template else []
        targets.append((_fill(template, ws_id), {"q": "\x00", "workspace_id": f"{ws_id}\x00"}))
        for path, params in targets:
            r = await client.request(method, path, params=params, content=b"{}", headers=headers)
            if (r.status_code, r.text) != (400, '{"error":"invalid URL"}'):
                failures.append(f"{method} {template} {params or path}: {r.status_code} {r.text[:120]}")
    assert not failures, f"{len(failures)} responses:\n" + "\n".join(failures[:80])
    # a percent-encoded percent sign is not a NUL
    r = await client.get("/workspaces", params={"q": "%00"}, headers=headers)
    assert r.status_code == 200, r.text
