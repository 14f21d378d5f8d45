"""The database or Redis away while a request runs: 503 `platform datastore unavailable`, answered by the
app's exception handlers, not by Starlette's outermost error middleware (which re-raises after its
response, and uvicorn then closes the connection under the client's next request). Runs on SQLite and
Postgres; the real outage is tests/faults/test_postgres_restart.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory

UNAVAILABLE = {"error": "platform datastore unavailable — retry shortly", "code": "platform_unavailable"}


def refused(*_: Any, **__: Any) -> Any:
    raise ConnectionRefusedError(111, "Connection refused")


async def test_uncaught_connection_error_is_a_clean_503(
    client_factory: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client: httpx.AsyncClient = await client_factory(MOLECULE_ENV="development")
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    monkeypatch.setattr(ctx.lifecycle, "transition", refused)  # the create's status move: not caught
    # the ASGI transport raises whatever escapes the app: a clean answer here means nothing escaped
    r = await client.post("/workspaces", json={"name": "db gone", "runtime": "external"})
    assert (r.status_code, r.json()) == (503, UNAVAILABLE)
    monkeypatch.undo()
    r = await client.post("/workspaces", json={"name": "db back", "runtime": "external"})
    assert r.status_code == 201, r.text


async def test_heartbeat_hot_lane_store_down_is_503(
    client_factory: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workspace_server.registry import routes

    client: httpx.AsyncClient = await client_factory(MOLECULE_ENV="development")
    monkeypatch.setattr(routes.service, "heartbeat", refused)
    monkeypatch.setattr(routes.service, "batcher", lambda _ctx: None)
    monkeypatch.setattr(routes, "grandfathered_caller", lambda *_a, **_k: _none())
    r = await client.post(
        "/registry/heartbeat", json={"workspace_id": "00000000-0000-0000-0000-000000000001"}
    )
    assert (r.status_code, r.json()) == (503, UNAVAILABLE)


async def _none() -> None:
    return None
