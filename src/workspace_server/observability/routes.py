"""`/health`, `/admin/liveness`, `/metrics` (spec 06 §1.3 first rows, §2.5, §4)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from workspace_server.auth.deps import AdminAuth, Ctx
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.observability.metrics import CONTENT_TYPE, render

router = APIRouter()


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/admin/liveness")
async def liveness(_: AdminAuth, ctx: Ctx) -> JSONResponse:
    """Last tick of each supervised loop, so a loop that is stuck but not crashed shows (#85)."""
    ticks = ctx.loop_ticks
    now = utcnow()
    subsystems: dict[str, Any] = {}
    for name, last in list(ticks.items()):
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        subsystems[name] = {
            "last_tick_at": rfc3339(last),
            "seconds_ago": int((now - last).total_seconds()),
        }
    return JSONResponse({"subsystems": subsystems})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    # Rendered on the event loop thread so go_goroutines can count this loop's tasks.
    body = render(request.app.state.metrics_registry)
    return Response(content=body, headers={"content-type": CONTENT_TYPE})
