"""HTTP for the provisioner: `POST /admin/workspace-images/refresh` (AdminAuth, spec 02 §6)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx
from workspace_server.common.errors import ApiError
from workspace_server.provisioner.refresh import RefreshError, refresh

router = APIRouter()

DOCKER_ONLY = "image refresh needs the docker workspace backend"


@router.post("/admin/workspace-images/refresh")
async def refresh_images(request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    orch = ctx.extras.get("orchestrator")
    backend = getattr(orch, "backend", None)
    known = [rt for rt in orch.images.known() if rt != "external"] if orch is not None else []
    runtime = request.query_params.get("runtime", "")
    if runtime and runtime not in known:
        raise ApiError(400, f"unknown runtime: {runtime}", known_runtimes=known)
    if backend is None or backend.name != "docker":
        raise ApiError(503, DOCKER_ONLY)  # DECIDE: the process backend has no images to pull
    recreate = request.query_params.get("recreate", "true") == "true"
    try:
        result = await refresh(orch, [runtime] if runtime else known, recreate)
    except RefreshError as exc:
        return JSONResponse(
            {"error": "container list failed", "partial_result": exc.result.to_dict()}, status_code=500
        )
    return JSONResponse(result.to_dict())
