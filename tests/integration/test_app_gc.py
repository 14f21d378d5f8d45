"""`serve` freezes start-up objects out of the cyclic collector (app.create_app `freeze_gc`); an app that
stopped is garbage (nothing process-wide keeps it)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from workspace_server.app import GC_YOUNG_THRESHOLD, create_app
from workspace_server.config import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()  # the rest of the suite builds apps without freezing
    gc.set_threshold(*threshold)  # ... and with the collector's default thresholds


async def test_serve_app_freezes_start_up_objects(tmp_path: Path, unfrozen: None) -> None:
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/gc.db", WORKSPACE_BACKEND="none")
    plain = create_app(settings, run_loops=False)
    default_young = gc.get_threshold()[0]
    async with LifespanManager(plain):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold()[0] == default_young
    frozen = create_app(settings, run_loops=False, freeze_gc=True)
    async with LifespanManager(frozen):
        # the app, its routes and its context now sit in the permanent generation
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD  # young collections ~14x rarer
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=frozen), base_url="http://t") as c:
            r = await c.post("/workspaces", json={"name": "after freeze"})
            assert r.status_code == 201
            assert (await c.get(f"/workspaces/{r.json()['id']}")).json()["name"] == "after freeze"


async def test_a_stopped_app_is_collected(tmp_path: Path) -> None:
    """FastAPI keeps endpoint callables in a process-wide cache: an endpoint closing over its app kept every
    app a process built alive, with its context (the suite held ~6 GB of them)."""
    gone = await _serve_once(Settings(DATABASE_URL=f"sqlite:///{tmp_path}/gone.db", WORKSPACE_BACKEND="none"))
    gc.collect()
    assert gone() is None


async def _serve_once(settings: Settings) -> weakref.ref[FastAPI]:
    """Start an app, use its routes (the docs ones too), stop it; only a weak reference leaves."""
    app = create_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.post("/workspaces", json={"name": "short-lived"})).status_code == 201
            for path in ("/openapi.json", "/docs", "/docs/swagger-ui.css", "/health"):
                assert (await c.get(path)).status_code == 200, path
    return weakref.ref(app)
