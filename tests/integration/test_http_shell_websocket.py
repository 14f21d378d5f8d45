"""WebSocket handshakes go through the same global middleware on a real server (uvicorn)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from fastapi import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import LiveServer

ORG = "0e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b"
PATH = "/http-shell-ws"

LiveFactory = Callable[..., LiveServer]


def start(factory: LiveFactory, **overrides: object) -> LiveServer:
    srv = factory(**overrides)

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    srv.app.add_api_websocket_route(PATH, echo)
    return srv


def ws_url(srv: LiveServer) -> str:
    return srv.url.replace("http://", "ws://") + PATH


async def echo_once(srv: LiveServer, **kwargs: object) -> str:
    async with connect(ws_url(srv), **kwargs) as ws:  # type: ignore[arg-type]
        await ws.send("ping")
        return str(await ws.recv())


async def refused_status(srv: LiveServer, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        await echo_once(srv, **kwargs)
    return info.value.response.status_code


async def test_websocket_passes_through_and_is_counted(live_server_factory: LiveFactory) -> None:
    srv = start(live_server_factory)
    assert await echo_once(srv) == "ping"
    assert await echo_once(srv, origin="http://localhost:3000") == "ping"
    async with httpx.AsyncClient(base_url=srv.url) as http:
        text = (await http.get("/metrics")).text
    assert f'molecule_http_requests_total{{method="GET",path="{PATH}",status="101"}} 2.0' in text


async def test_websocket_from_disallowed_origin_is_refused(
    live_server_factory: LiveFactory, caplog: pytest.LogCaptureFixture
) -> None:
    srv = start(live_server_factory)
    uvicorn_log = logging.getLogger("uvicorn.error")  # does not propagate to caplog's root handler
    uvicorn_log.addHandler(caplog.handler)
    try:
        assert await refused_status(srv, origin="http://evil.example") == 403
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    # a refusal is an answer, not a server error (uvicorn's default WebSocket protocol logged one)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_websocket_is_rate_limited(live_server_factory: LiveFactory) -> None:
    srv = start(live_server_factory, RATE_LIMIT="1")
    async with httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.get("/health")).status_code == 200
    assert await refused_status(srv) == 429


async def test_websocket_behind_tenant_guard(live_server_factory: LiveFactory) -> None:
    srv = start(live_server_factory, MOLECULE_ORG_ID=ORG)
    assert await refused_status(srv) == 404
    assert await echo_once(srv, additional_headers={"X-Molecule-Org-Id": ORG}) == "ping"
