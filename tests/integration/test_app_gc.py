"""`serve` freezes start-up objects out of the cyclic collector (app.create_app `freeze_gc`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from workspace_server.app import create_app
from workspace_server.config import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite builds apps without freezing


async def test_serve_app_freezes_start_up_objects(tmp_path: Path, unfrozen: None) -> None:
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/gc.db", WORKSPACE_BACKEND="none")
    plain = create_app(settings, run_loops=False)
    async with LifespanManager(plain):
        assert gc.get_freeze_count() == 0
    frozen = create_app(settings, run_loops=False, freeze_gc=True)
    async with LifespanManager(frozen):
        # the app, its routes and its context now sit in the permanent generation
        assert gc.get_freeze_count() > 10_000
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=frozen), base_url="http://t") as c:
            r = await c.post("/workspaces", json={"name": "after freeze"})
            assert r.status_code == 201
            assert (await c.get(f"/workspaces/{r.json()['id']}")).json()["name"] == "after freeze"
