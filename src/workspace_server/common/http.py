"""Request-body helpers that give the reference's exact 4xx messages instead of FastAPI's 422s.

What a body may hold is decided here and nowhere else (DESIGN §9): every route reads its body through
`read_body` (a size cap) and decodes it with `read_json`/`parse_json` (no NaN/Infinity/`1e400`, no lone
surrogate, no NUL, nesting at most MAX_JSON_DEPTH). A route only chooses its error message. The route-table
test (tests/integration/test_bad_bodies.py) sends every route the bodies refused here.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from workspace_server.common.errors import ApiError
from workspace_server.common.jsonnum import UnsafeJSON, decode_document

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


INVALID_JSON = "invalid JSON"


async def read_json(
    request: Request, error: str = "invalid request body", max_bytes: int = DEFAULT_MAX_BODY
) -> Any:
    return parse_json(await read_body(request, max_bytes), error)


_RAISE: Any = object()


def parse_json(
    raw: bytes,
    error: str = "invalid request body",
    *,
    if_malformed: Any = _RAISE,
    check_strings: bool = True,
    allow_nul: bool = False,
) -> Any:
    """The decoded body, or ApiError(400, error).

    Refused: malformed JSON; NaN/Infinity/`1e400` (Go refuses them, and re-encoded they are not JSON);
    NUL and lone surrogates (Postgres text and jsonb cannot hold them: the write would be a 500, so they
    are bad input on both databases alike); nesting deeper than MAX_JSON_DEPTH.

    `if_malformed`: for the routes whose reference ignores a body it cannot parse, malformed JSON reads as
    that value instead; a well-formed body that cannot be kept is still refused. `check_strings=False`: the
    caller checks strings itself, item by item (`jsonnum.storable_json`). `allow_nul`: the caller strips NUL
    before it stores anything (a log tail can hold one).
    """
    try:
        return decode_document(raw, check_strings=check_strings, allow_nul=allow_nul)
    except UnsafeJSON:
        raise ApiError(400, error) from None
    except (ValueError, UnicodeDecodeError):
        if if_malformed is not _RAISE:
            return if_malformed
        raise ApiError(400, error) from None


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
