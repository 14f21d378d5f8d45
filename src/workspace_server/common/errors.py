"""The one error type that crosses from services to HTTP.

Services raise `ApiError(status, "message")`; the app's handler renders `{"error": message}` (plus any extra
keys the reference puts in that body). Messages are part of the wire contract: never put exception text,
paths or SQL in them.
"""

from __future__ import annotations

from typing import Any


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
