"""Request-body helpers that give the reference's exact 4xx messages instead of FastAPI's 422s."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from workspace_server.common.errors import ApiError
from workspace_server.common.jsonnum import loads_finite, storable_json

M = TypeVar("M", bound=BaseModel)

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
    raw = await read_body(request, max_bytes)
    try:
        data = loads_finite(raw)  # no NaN/Infinity/1e400: Go refuses them, and re-encoded they are not JSON
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, error) from None
    # Postgres text and jsonb cannot hold NUL or a lone surrogate (the write would fail as a 500): refused
    # as bad input, on both databases alike. Both arrive only as a `\\u` escape or as the raw bytes of an
    # encoded surrogate (0xED), so the byte test keeps the common body free of the walk.
    if (b"\\u" in raw or b"\xed" in raw) and not storable_json(data):
        raise ApiError(400, error)
    return data


async def read_model(
    request: Request, model: type[M], error: str = "invalid request body", max_bytes: int = DEFAULT_MAX_BODY
) -> M:
    data = await read_json(request, error, max_bytes)
    return parse_model(model, data, error)


def parse_model(model: type[M], data: Any, error: str = "invalid request body") -> M:
    if not isinstance(data, dict):
        raise ApiError(400, error)
    try:
        return model.model_validate(data)
    except ValidationError:
        raise ApiError(400, error) from None


def bearer_token(request: Request) -> str:
    """`Authorization: Bearer <tok>` (case-sensitive prefix, remainder trimmed); anything else is ""."""
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        return ""
    return header[len("Bearer ") :].strip()


def client_ip(request: Request) -> str:
    """The TCP peer. X-Forwarded-For is never trusted (spec 03 §4, #179)."""
    return request.client.host if request.client else ""
