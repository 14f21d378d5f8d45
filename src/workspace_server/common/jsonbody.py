"""The one rule for what a JSON request body may hold, with no web framework in it (DESIGN §9).

`common/http.py` reads request bodies (size cap) and decodes them with these; services that take a body
already read (bundles, memories, plugins, tokens, approvals) call them directly, so no service needs to
import the web layer. A route or service only chooses its error message.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from workspace_server.common.errors import ApiError
from workspace_server.common.jsonnum import UnsafeJSON, decode_document

M = TypeVar("M", bound=BaseModel)

INVALID_JSON = "invalid JSON"

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


def parse_model(model: type[M], data: Any, error: str = "invalid request body") -> M:
    if not isinstance(data, dict):
        raise ApiError(400, error)
    try:
        return model.model_validate(data)
    except ValidationError:
        raise ApiError(400, error) from None
