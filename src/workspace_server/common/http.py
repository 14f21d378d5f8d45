"""Request-body helpers that give the reference's exact 4xx messages instead of FastAPI's 422s.

What a body may hold is decided in one place (DESIGN §9): every route reads its body through `read_body`
(a size cap) and decodes it with `read_json`/`parse_json` (`common/jsonbody.py`, web-free so services use
it too: no NaN/Infinity/`1e400`, no lone surrogate, no NUL, nesting at most MAX_JSON_DEPTH). A route only
chooses its error message. The route-table test (tests/integration/test_bad_bodies.py) sends every route
the bodies refused here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel

from workspace_server.common.errors import ApiError
from workspace_server.common.jsonbody import INVALID_JSON, parse_json, parse_model

__all__ = [
    "INVALID_JSON",
    "bearer_token",
    "client_ip",
    "first_headers",
    "parse_json",
    "parse_model",
    "read_body",
    "read_json",
    "read_model",
]

M = TypeVar("M", bound=BaseModel)


def first_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """A request's headers as a dict (lowercase names, as the server gives them), each name's first value
    as Starlette's `request.headers[name]` reads it: one pass for a route that looks at several, where
    each Starlette lookup scans the list (and raises and catches KeyError for an absent name)."""
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1")
        if name not in headers:
            headers[name] = value.decode("latin-1")
    return headers


DEFAULT_MAX_BODY = 10 * 1024 * 1024


async def read_body(
    request: Request, max_bytes: int = DEFAULT_MAX_BODY, too_large_msg: str | None = None
) -> bytes:
    """Read the body with a hard cap; over the cap is 413 without buffering the rest."""
    declared = request.headers.get("content-length")
    msg = too_large_msg or "request body too large"
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, msg)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, msg)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: Request, error: str = "invalid request body", max_bytes: int = DEFAULT_MAX_BODY
) -> Any:
    return parse_json(await read_body(request, max_bytes), error)


async def read_model(
    request: Request, model: type[M], error: str = "invalid request body", max_bytes: int = DEFAULT_MAX_BODY
) -> M:
    data = await read_json(request, error, max_bytes)
    return parse_model(model, data, error)


def bearer_token(request: Request) -> str:
    """`Authorization: Bearer <tok>` (case-sensitive prefix, remainder trimmed); anything else is ""."""
    for name, value in request.scope["headers"]:  # the first, as `request.headers.get` (names lower case)
        if name == b"authorization":
            header = value.decode("latin-1")
            return header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
    return ""


def client_ip(request: Request) -> str:
    """The TCP peer. X-Forwarded-For is never trusted (spec 03 §4, #179)."""
    return request.client.host if request.client else ""
