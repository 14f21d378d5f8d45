"""The app in the benchmark's own process, on a throwaway database: what the in-process diagnostics share."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from asgi_lifespan import LifespanManager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from workspace_server.app import create_app  # noqa: E402
from workspace_server.config import Settings  # noqa: E402


def add_pg_argument(parser: argparse.ArgumentParser) -> None:
    """`--pg`: the Postgres admin URL the throwaway database is created from."""
    parser.add_argument(
        "--pg", default=os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )


@asynccontextmanager
async def throwaway_app(pg: str, prefix: str) -> AsyncIterator[tuple[Any, Any]]:
    """(the app, its ASGI entry with the lifespan run): `create_app` as `serve` builds it, without the
    background loops, on a database `<prefix>_<pid>_<rand>` created from the admin URL `pg` and dropped at
    the end; no Redis, no backend, open bootstrap mode, a rate limit no run reaches."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                DATABASE_URL=pg.rsplit("/", 1)[0] + "/" + name,
                REDIS_URL="",
                WORKSPACE_BACKEND="none",
                DATA_DIR=str(Path(tmp) / "data"),
                CONFIGS_DIR=str(Path(tmp) / "configs"),
                MOLECULE_ENV="development",
                ADMIN_TOKEN="",
                RATE_LIMIT="100000000",
            )
            app = create_app(settings, run_loops=False, freeze_gc=True)
            async with LifespanManager(app) as manager:
                yield app, manager.app
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
