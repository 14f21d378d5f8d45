"""Run Alembic migrations to head (used by `serve`, `migrate` and the tests)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("database_url", database_url)
    return cfg


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Migrate on an existing engine; Alembic's own version table records what ran (no re-runs, no downs)."""

    def _upgrade(connection: object) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # replicas starting together: one migrates, the others wait and then find nothing to do
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7243011)"))
        await conn.run_sync(_upgrade)
