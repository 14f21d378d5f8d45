"""Engine construction from DATABASE_URL (sqlite:///path, postgres://…, postgresql://…)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from workspace_server.common.jsonnum import loads_stored


def async_url(database_url: str) -> str:
    """Map the reference's URL forms onto SQLAlchemy async driver URLs."""
    url = database_url.strip()
    if url.startswith("sqlite"):
        rest = url.split(":", 1)[1]
        return "sqlite+aiosqlite:" + rest
    for prefix in ("postgres://", "postgresql://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            parts = urlsplit("postgresql+asyncpg://" + url[len(prefix) :])
            # asyncpg spells libpq's sslmode as ssl
            query = [(("ssl" if k == "sslmode" else k), v) for k, v in parse_qsl(parts.query)]
            query = [(k, v) for k, v in query if not (k == "ssl" and v == "disable")]
            return urlunsplit(parts._replace(query=urlencode(query)))
    raise ValueError("DATABASE_URL must start with sqlite://, postgres:// or postgresql://")


PG_CONNECT_TIMEOUT_SECONDS = 5.0  # asyncpg's connect (default 60 s)
PG_POOL_TIMEOUT_SECONDS = 10.0  # waiting for a pooled connection (SQLAlchemy's default 30 s)


def make_engine(database_url: str) -> AsyncEngine:
    url = async_url(database_url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        # no pre-ping: it costs a round trip per checkout on the hottest paths; a connection the server
        # dropped is detected as a disconnect, invalidated, and the pool refills (recycle bounds age).
        # Bounded waits: while Postgres is away a request fails within seconds (a 503, common/errors.py)
        # instead of queueing behind a 60 s connect or a 30 s pool checkout.
        kwargs.update(
            pool_size=20,
            max_overflow=10,
            pool_recycle=1800,
            pool_timeout=PG_POOL_TIMEOUT_SECONDS,
            connect_args={"timeout": PG_CONNECT_TIMEOUT_SECONDS},
        )
    # statement parameters can hold plaintext secrets: keep them out of error text and logs.
    # JSON columns are read with `loads_stored`, which repairs what no response could carry (rows stored
    # before request bodies were checked in one place: a lone surrogate, Infinity, 1e5000).
    engine = create_async_engine(url, hide_parameters=True, json_deserializer=loads_stored, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    return engine


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same pool with AUTOCOMMIT: single-statement hot paths skip the BEGIN/COMMIT round trips."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def dialect_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """The connection's dialect INSERT of `table`: it knows ON CONFLICT (and `excluded`), which the generic
    one does not. Postgres and SQLite spell the upsert alike."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
