"""The one error type that crosses from services to HTTP.

Services raise `ApiError(status, "message")`; the app's handler renders `{"error": message}` (plus any extra
keys the reference puts in that body). Messages are part of the wire contract: never put exception text,
paths or SQL in them.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

BODY_UNREADABLE = "failed to read request body"


class ApiError(Exception):
    def __init__(
        self, status: int, error: str | None, /, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(error or "")
        self.status = status
        self.body: dict[str, Any] = {} if error is None else {"error": error}
        self.body.update(extra)
        self.headers = headers or {}


def not_found(msg: str = "workspace not found") -> ApiError:
    return ApiError(404, msg)


def bad_request(msg: str) -> ApiError:
    return ApiError(400, msg)


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


def http_error_response(exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own HTTP errors in our shape. The reference has no 405: a wrong method
    is a 404."""
    if exc.status_code == 405:
        return JSONResponse({"error": "not found"}, status_code=404)
    if exc.status_code == 404:
        msg = "not found"
    else:
        msg = exc.detail if isinstance(exc.detail, str) else "error"
    return JSONResponse({"error": msg}, status_code=exc.status_code, headers=exc.headers)


def client_gone_response(request: Request) -> JSONResponse:
    """A client that hung up before sending its whole body (Starlette's ClientDisconnect): one info line,
    not an error with a traceback. Nobody reads the answer; the access log and metrics see a 400."""
    log.info("client went away before sending the whole body: %s %s", request.method, request.url.path)
    return JSONResponse({"error": BODY_UNREADABLE}, status_code=400)
