"""schema.py and the Alembic revisions describe the same database, on SQLite and on Postgres.

Tables are defined twice: once in `db/schema.py` (what the code queries) and once as explicit
`op.create_table` calls in `db/migrations/versions` (what a real database gets). This test migrates a
database to head and asks Alembic's autogenerate comparison for the difference; any table, column, type,
nullability, index, unique or foreign key that one side has and the other lacks fails it. Server defaults
are compared on Postgres only: Alembic's SQLite reflection reports every `''` default as changed. CHECK
constraints are not compared by Alembic at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from tests.conftest import need
from workspace_server.db.engine import make_engine
from workspace_server.db.migrate import upgrade_to_head
from workspace_server.db.schema import metadata

# Built in migration 0004 with raw SQL (a Postgres expression index that schema.py cannot express).
RAW_SQL_INDEXES = {"ix_agent_memories_content_fts"}


def _include(obj: Any, name: str | None, type_: str, reflected: bool, _compare_to: Any) -> bool:
    if type_ == "table" and name == "alembic_version":
        return False
    return not (type_ == "index" and reflected and name in RAW_SQL_INDEXES)


def _diff(conn: Connection) -> list[Any]:
    opts = {
        "compare_type": True,
        "compare_server_default": conn.dialect.name == "postgresql",
        "include_object": _include,
        "target_metadata": metadata,
    }
    ctx = MigrationContext.configure(conn, opts=opts)
    return list(compare_metadata(ctx, metadata))


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_migrated_database_matches_schema_py(db: str, tmp_path: Path, pg_database: str | None) -> None:
    if db == "sqlite":
        url = f"sqlite:///{tmp_path}/schema.db"
    else:
        need("Postgres on 127.0.0.1:5432", pg_database is not None)
        assert pg_database is not None
        url = pg_database  # migrated to head at session start by the fixture
    engine = make_engine(url)
    try:
        await upgrade_to_head(engine)  # a no-op when already at head
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == [], "schema.py and the migrations disagree:\n" + "\n".join(map(repr, diff))
