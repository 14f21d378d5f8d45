"""/health, /admin/liveness, /metrics and the request-body cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from tests.conftest import ClientFactory
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.observability.metrics import render

METRIC_NAMES = (
    "go_goroutines",
    "go_memstats_alloc_bytes",
    "go_memstats_sys_bytes",
    "go_memstats_heap_inuse_bytes",
    "go_gc_duration_seconds_total",
    "molecule_http_requests_total",
    "molecule_http_request_duration_seconds_total",
    "molecule_websocket_connections_active",
)


def app_of(client: httpx.AsyncClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[attr-defined]
    return app


def ctx_of(client: httpx.AsyncClient) -> AppContext:
    ctx: AppContext = app_of(client).state.ctx
    return ctx


def samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.content == b'{"status":"ok"}'


async def test_wrong_method_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/health")
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}


async def test_liveness_reports_loop_ticks(client: httpx.AsyncClient) -> None:
    tick = utcnow() - timedelta(seconds=100)
    ctx_of(client).loop_ticks = {"scheduler": tick}
    r = await client.get("/admin/liveness")
    assert r.status_code == 200
    sub = r.json()["subsystems"]
    assert list(sub) == ["scheduler"]
    assert sub["scheduler"]["last_tick_at"] == rfc3339(tick)
    assert isinstance(sub["scheduler"]["seconds_ago"], int)
    assert sub["scheduler"]["seconds_ago"] >= 100


async def test_liveness_is_admin_only(client_factory: ClientFactory) -> None:
    c = await client_factory(ADMIN_TOKEN="admin-secret")
    r = await c.get("/admin/liveness")
    assert r.status_code == 401
    assert r.json() == {"error": "admin auth required"}
    bad = await c.get("/admin/liveness", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.json() == {"error": "invalid admin auth token"}
    ok = await c.get("/admin/liveness", headers={"Authorization": "Bearer admin-secret"})
    assert ok.status_code == 200
    assert ok.json() == {"subsystems": {}}


async def test_metrics_exposition(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    for name in METRIC_NAMES:
        assert f"# HELP {name} " in r.text
        assert f"# TYPE {name} " in r.text
    assert "_created" not in r.text
    values = samples(r.text)
    assert values["molecule_websocket_connections_active"] == 0
    assert values["go_memstats_alloc_bytes"] > 0


async def test_request_counter_uses_route_template(client: httpx.AsyncClient) -> None:
    async def probe(id: str) -> dict[str, str]:
        return {"id": id}

    app_of(client).add_api_route("/workspaces/{id}/http-shell-probe", probe)
    key = 'molecule_http_requests_total{method="GET",path="/workspaces/:id/http-shell-probe",status="200"}'
    assert key not in samples((await client.get("/metrics")).text)
    await client.get("/workspaces/1b7c0c3e-0000-4000-8000-000000000001/http-shell-probe")
    await client.get("/workspaces/1b7c0c3e-0000-4000-8000-000000000002/http-shell-probe")
    values = samples((await client.get("/metrics")).text)
    assert values[key] == 2
    dur = key.replace("molecule_http_requests_total", "molecule_http_request_duration_seconds_total")
    assert values[dur] > 0
    assert not any("1b7c0c3e" in k for k in values)
    # A scrape is counted once it has answered, so the second scrape sees the first one only.
    assert values['molecule_http_requests_total{method="GET",path="/metrics",status="200"}'] == 1


async def test_hot_route_is_labelled_and_refuses_other_methods(client: httpx.AsyncClient) -> None:
    """The heartbeat is served ahead of FastAPI's router (common/routing.py): it still gets its route
    label, and a wrong method is still the reference's 404, not a 405."""
    body = {"workspace_id": "1b7c0c3e-0000-4000-8000-00000000000a"}
    assert (await client.post("/registry/heartbeat", json=body)).json() == {"status": "ok"}
    wrong = await client.get("/registry/heartbeat")
    assert (wrong.status_code, wrong.json()) == (404, {"error": "not found"})
    values = samples((await client.get("/metrics")).text)
    assert values['molecule_http_requests_total{method="POST",path="/registry/heartbeat",status="200"}'] == 1
    assert values['molecule_http_requests_total{method="GET",path="unmatched",status="404"}'] == 1


async def test_template_includes_router_prefixes(client: httpx.AsyncClient) -> None:
    sub = APIRouter()

    @sub.get("/items/{name}")
    async def item(id: str, name: str) -> dict[str, str]:
        return {"id": id, "name": name}

    app_of(client).include_router(sub, prefix="/http-shell/{id}")
    assert (await client.get("/http-shell/abc/items/x")).status_code == 200
    text = (await client.get("/metrics")).text
    assert (
        'molecule_http_requests_total{method="GET",path="/http-shell/:id/items/:name",status="200"} 1.0'
        in text
    )


async def test_unmatched_and_refused_requests_are_counted(client_factory: ClientFactory) -> None:
    c = await client_factory(RATE_LIMIT="4")
    await c.get("/definitely/not/here")
    await c.get("/health", headers={"Origin": "http://evil.example"})  # CORS 403
    await c.get("/health")
    await c.get("/health")
    await c.get("/health")
    await c.get("/health")  # 429
    scrape = await c.get("/metrics")  # 429 as well: /metrics is limited too
    assert scrape.status_code == 429
    values = samples(render(app_of(c).state.metrics_registry).decode())
    assert values['molecule_http_requests_total{method="GET",path="unmatched",status="404"}'] == 1
    assert values['molecule_http_requests_total{method="GET",path="/health",status="403"}'] == 1
    assert values['molecule_http_requests_total{method="GET",path="/health",status="200"}'] == 3
    assert values['molecule_http_requests_total{method="GET",path="/health",status="429"}'] == 1
    assert values['molecule_http_requests_total{method="GET",path="/metrics",status="429"}'] == 1


async def test_websocket_gauge_reads_the_hub(client: httpx.AsyncClient) -> None:
    hub = ctx_of(client).hub
    a = hub.register(None)
    hub.register("ws-1")
    assert samples((await client.get("/metrics")).text)["molecule_websocket_connections_active"] == 2
    hub.unregister(a)
    assert samples((await client.get("/metrics")).text)["molecule_websocket_connections_active"] == 1


# ---------------------------------------------------------------- body cap


class Payload(BaseModel):
    data: str


def add_body_routes(app: FastAPI) -> None:
    async def raw(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async def model(p: Payload) -> dict[str, int]:
        return {"size": len(p.data)}

    app.add_api_route("/http-shell/raw", raw, methods=["POST"])
    app.add_api_route("/http-shell/model", model, methods=["POST"])


async def chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


async def test_declared_oversized_body_is_413(client_factory: ClientFactory) -> None:
    c = await client_factory(MAX_BODY_BYTES=1000)
    add_body_routes(app_of(c))
    r = await c.post("/http-shell/raw", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.json() == {"error": "request body too large"}
    assert r.headers["x-frame-options"] == "DENY"
    # Refused before routing: even a path with no route gets the 413.
    assert (await c.post("/nowhere", content=b"x" * 5000)).status_code == 413


async def test_streamed_oversized_body_is_413(client_factory: ClientFactory) -> None:
    c = await client_factory(MAX_BODY_BYTES=1000)
    add_body_routes(app_of(c))
    raw = await c.post("/http-shell/raw", content=chunks(5000))
    assert raw.status_code == 413
    assert raw.json() == {"error": "request body too large"}
    model = await c.post(
        "/http-shell/model", content=chunks(5000), headers={"Content-Type": "application/json"}
    )
    assert model.status_code == 413
    assert model.json() == {"error": "request body too large"}


async def test_body_at_the_cap_is_accepted(client_factory: ClientFactory) -> None:
    c = await client_factory(MAX_BODY_BYTES=1000)
    add_body_routes(app_of(c))
    r = await c.post("/http-shell/raw", content=chunks(1000))
    assert r.status_code == 200
    assert r.json() == {"size": 1000}
