"""The database or Redis being away is a 503 (common/errors.py `backing_store_down`), a bug stays a 500."""

from __future__ import annotations

import json

import asyncpg.exceptions
import pytest
import redis.exceptions
import sqlalchemy.exc

from workspace_server.common.errors import ApiError, api_error_response, backing_store_down


def raised_from(inner: BaseException, status: int = 500) -> ApiError:
    """An ApiError raised while handling `inner`, the way services do (`raise ApiError(...) from None`)."""
    try:
        try:
            raise inner
        except BaseException:
            raise ApiError(status, "registration failed") from None
    except ApiError as exc:
        return exc


@pytest.mark.parametrize(
    "inner",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        sqlalchemy.exc.DBAPIError("SELECT 1", None, Exception("closed"), connection_invalidated=True),
        redis.exceptions.ConnectionError("Error 111 connecting"),
    ],
)
def test_store_down_500_becomes_503(inner: BaseException) -> None:
    assert backing_store_down(inner)
    resp = api_error_response(raised_from(inner))
    assert resp.status_code == 503
    assert json.loads(resp.body)["error"] == "platform datastore unavailable — retry shortly"


@pytest.mark.parametrize(
    "inner",
    [
        ValueError("bad"),
        PermissionError(13, "denied"),
        sqlalchemy.exc.IntegrityError("INSERT", None, Exception("duplicate key")),
        sqlalchemy.exc.DBAPIError("SELECT 1", None, Exception("syntax error")),
    ],
)
def test_other_errors_stay_500(inner: BaseException) -> None:
    assert not backing_store_down(inner)
    assert api_error_response(raised_from(inner)).status_code == 500


def test_only_500s_are_mapped() -> None:
    resp = api_error_response(raised_from(ConnectionRefusedError(111, "refused"), status=404))
    assert resp.status_code == 404


def test_cause_is_followed_through_sqlalchemy_wrapping() -> None:
    pg = asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
    wrapped = sqlalchemy.exc.DBAPIError("SELECT 1", None, Exception("adapted"))
    wrapped.__cause__ = pg
    assert backing_store_down(wrapped)
