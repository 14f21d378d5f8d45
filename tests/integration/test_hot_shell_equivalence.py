"""The hot shell (middleware/hot_shell.py) answers exactly as the layered middleware stack does.

Two apps with the same settings and the same endpoint: in one the endpoint is a hot route (served by the
fused shell), in the other an ordinary route behind the layered middlewares. Every request of a matrix
(origins, the rate limit running out, dev mode, the tenant guard, a NUL in the URL, declared and
streamed bodies over the cap, the handler's own headers, errors) goes to both; status, headers (in
order) and body must be identical. A change to one path that the other does not share fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from workspace_server.common.errors import ApiError, http_error_response
from workspace_server.common.routing import HotRoute
from workspace_server.config import Settings
from workspace_server.middleware import install_middleware

CANVAS = "http://canvas.example"
ORG = "org-1"


async def endpoint(request: Request, body: bytes) -> Response:
    """The hot route's handler: the lane hands it the whole body, read under the body cap."""
    mode = request.query_params.get("mode", "")
    if mode == "api-error":
        raise ApiError(409, "taken")
    if mode == "crash":
        raise RuntimeError("bug")
    headers = {"X-Frame-Options": "SAMEORIGIN", "Vary": "Accept"} if mode == "own-headers" else {}
    return JSONResponse({"len": len(body)}, headers=headers)


async def layered_endpoint(request: Request) -> Response:
    """The same handler as an ordinary route: it reads its body itself (through the body cap)."""
    return await endpoint(request, await request.body())


def build(settings: Settings, hot: bool) -> FastAPI:
    app = FastAPI()
    route = HotRoute("/hot/{id}", endpoint, methods=["POST"])
    app.router.routes.append(route if hot else Route("/hot/{id}", layered_endpoint, methods=["POST"]))
    # the app's handlers for these errors, rendering as app.py's do (the hot lane renders them itself)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return http_error_response(exc)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "internal error"}, status_code=500)

    install_middleware(app, settings, [route] if hot else [])
    return app


async def chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 1000):
        yield b"x" * 1000


REQUESTS: list[dict[str, Any]] = [
    {},
    {"headers": {"Origin": CANVAS}},
    {"headers": {"Origin": "http://evil.example"}},
    {"headers": {"Origin": "http://test", "Host": "test"}},
    {"params": {"mode": "own-headers"}, "headers": {"Origin": CANVAS}},
    {"params": {"mode": "api-error"}},
    {"params": {"mode": "crash"}},
    {"params": {"q": "a\x00b"}},
    {"content": b"x" * 5000},
    {"content": chunks(5000)},
    {"headers": {"X-Molecule-Org-Id": ORG}},
    {"headers": {"X-Molecule-Org-Id": "other"}},
    {},
    {},
]

SETTINGS = [
    pytest.param({"RATE_LIMIT": "6", "CORS_ORIGINS": CANVAS, "MAX_BODY_BYTES": "4096"}, id="production"),
    pytest.param({"CORS_ORIGINS": "*", "MOLECULE_ENV": "development", "MAX_BODY_BYTES": "4096"}, id="dev"),
    pytest.param({"RATE_LIMIT": "100", "MOLECULE_ORG_ID": ORG, "MAX_BODY_BYTES": "4096"}, id="tenant"),
]


Seen = tuple[int, list[tuple[str, str]], bytes]  # status, headers in order, body


def seen(r: httpx.Response) -> Seen:
    headers = [(k, v) for k, v in r.headers.multi_items() if k not in ("date", "x-ratelimit-reset")]
    return r.status_code, headers, r.content


@pytest.mark.parametrize("env", SETTINGS)
async def test_hot_shell_answers_as_the_layered_stack(env: dict[str, str]) -> None:
    settings = Settings(**env)  # type: ignore[arg-type]
    apps = [build(settings, hot=True), build(settings, hot=False)]
    answers: list[list[Seen]] = [[], []]
    for app, out in zip(apps, answers, strict=True):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            out += await ask_matrix(client)
    assert_same_answers(*answers)


async def ask_matrix(client: httpx.AsyncClient) -> list[Seen]:
    """Every request of REQUESTS, as the client sees the answers."""
    out = []
    for req in REQUESTS:
        kwargs = dict(req)
        if "content" in kwargs and not isinstance(kwargs["content"], bytes):
            kwargs["content"] = chunks(5000)  # a fresh stream for each app
        out.append(seen(await client.post("/hot/1", **kwargs)))
    return out


def assert_same_answers(hot_answers: list[Seen], layered_answers: list[Seen]) -> None:
    """The hot lane's answers to REQUESTS are the layered stack's, but for the one intended difference."""
    for i, (hot, layered) in enumerate(zip(hot_answers, layered_answers, strict=True)):
        if REQUESTS[i].get("params", {}).get("mode") == "crash" and layered[0] == 500:
            # The one intended difference: FastAPI's outermost error middleware renders an unhandled
            # error outside every middleware, so its 500 has no shell headers; the hot lane's 500 is
            # rendered inside the shell and carries them (security headers on every answer).
            assert (hot[0], hot[2]) == (layered[0], layered[2]) == (500, b'{"error":"internal error"}')
            assert set(layered[1]) < set(hot[1])
            assert ("x-content-type-options", "nosniff") in hot[1]
            continue
        assert hot == layered, f"request {i}: {REQUESTS[i]}\n{hot}\n{layered}"
    assert len({a[0] for a in hot_answers}) >= 3  # the matrix reaches refusals, not only 200s
