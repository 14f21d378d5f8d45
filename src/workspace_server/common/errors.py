"""The one error type that crosses from services to HTTP.

Services raise `ApiError(status, "message")`; the app's handler renders `{"error": message}` (plus any extra
keys the reference puts in that body). Messages are part of the wire contract: never put exception text,
paths or SQL in them.
"""

from __future__ import annotations

import asyncio
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


# What a caller sees while the database (or Redis) cannot be reached: raised by the auth classes, and
# answered for every route whose work failed that way (`unavailable_response`).
DATASTORE_UNAVAILABLE = ApiError(
    503, "platform datastore unavailable — retry shortly", code="platform_unavailable"
)


def not_found(msg: str = "workspace not found") -> ApiError:
    return ApiError(404, msg)


def backing_store_down(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, says the database or Redis
    could not be reached (connection refused, reset or lost; the server starting up or shutting down; no
    pooled connection in time). A query error (bad SQL, a constraint) is not one.

    Services that catch `Exception` and raise `ApiError(500, …) from None` keep the original as
    `__context__`; the chain is walked so those 500s become 503 too."""
    import sqlalchemy.exc

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, sqlalchemy.exc.TimeoutError | ConnectionError | asyncio.TimeoutError):
            return True  # pool checkout timeout; refused/reset sockets; a connect that timed out
        if _driver_connection_error(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def store_error_classes() -> tuple[type[Exception], ...]:
    """The exception classes `backing_store_down` may say yes to (for exception handlers keyed by class;
    each still asks `backing_store_down`: a DBAPIError is not always a lost connection)."""
    import asyncpg.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    return (
        sqlalchemy.exc.DBAPIError,
        sqlalchemy.exc.TimeoutError,
        ConnectionError,
        TimeoutError,
        asyncpg.exceptions.PostgresError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    )


def _driver_connection_error(exc: BaseException) -> bool:
    import asyncpg.exceptions
    import redis.exceptions

    return isinstance(
        exc,
        asyncpg.exceptions.PostgresConnectionError  # class 08: connection exceptions
        | asyncpg.exceptions.CannotConnectNowError  # 57P03: starting up, shutting down, recovering
        | asyncpg.exceptions.AdminShutdownError  # 57P01: terminated by a shutdown
        | asyncpg.exceptions.CrashShutdownError  # 57P02: another backend crashed
        | asyncpg.exceptions.ConnectionDoesNotExistError  # the connection closed under us
        | redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError,
    )


def unavailable_response() -> JSONResponse:
    return JSONResponse(DATASTORE_UNAVAILABLE.body, status_code=DATASTORE_UNAVAILABLE.status)


def unhandled_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    """An error no handler took: the database or Redis away is a 503 (retry later), anything else a
    server bug, logged with its traceback and answered with a bare 500 (no detail to the client)."""
    if backing_store_down(exc):
        log.warning("%s %s: datastore unavailable (%s)", method, path, type(exc).__name__)
        return unavailable_response()
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return JSONResponse({"error": "internal error"}, status_code=500)


def api_error_response(exc: ApiError) -> JSONResponse:
    """A 500 a service raised because the database or Redis is away is a 503 (retry), never a 500."""
    if exc.status == 500 and backing_store_down(exc.__cause__ or exc.__context__):
        return unavailable_response()
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
