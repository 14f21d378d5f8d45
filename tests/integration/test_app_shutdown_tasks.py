"""App shutdown stops background work through the task supervisor (issue 12 §2)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager

from workspace_server import app as app_module
from workspace_server.app import create_app
from workspace_server.common.tasks import SupervisorClosed
from workspace_server.config import Settings


async def test_shutdown_drains_then_cancels_and_refuses_new_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "SHUTDOWN_DEADLINE", 0.3)
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/t.db", WORKSPACE_BACKEND="none")
    app = create_app(settings, run_loops=True)
    finished: list[str] = []

    async def short() -> None:
        await asyncio.sleep(0.05)
        finished.append("short")

    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        ctx: Any = app.state.ctx
        loops = ctx.tasks.tasks("loops")
        assert loops and all(t.get_name().startswith("loop:") for t in loops)
        ctx.tasks.spawn("short", short())
        stuck = ctx.tasks.spawn("stuck", asyncio.Event().wait())
        started = time.monotonic()
    assert time.monotonic() - started < 5.0
    assert finished == ["short"]  # drained
    assert stuck.cancelled()  # cut off at the deadline
    assert all(t.done() for t in loops)
    assert ctx.tasks.tasks() == []
    coro = asyncio.sleep(0)
    with pytest.raises(SupervisorClosed):
        ctx.tasks.spawn("late", coro)
