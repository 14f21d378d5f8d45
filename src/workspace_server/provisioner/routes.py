"""HTTP for the provisioner (AdminAuth): `POST /admin/workspace-images/refresh` (spec 02 §6) and
`GET /workspaces/:id/console` (spec 01 §2, 02 §5)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.openapi import error_responses, optional_query
from workspace_server.provisioner.base import BackendError, InstanceNotRunning
from workspace_server.provisioner.refresh import RefreshError, refresh

router = APIRouter()

DOCKER_ONLY = "image refresh needs the docker workspace backend"
CONSOLE_MAX_BYTES = 256 << 10  # the reference's control-plane console cap
CONSOLE_TAIL_LINES = 2000
NO_CONSOLE = "console output unavailable on this deployment (no control plane)"


@router.post(
    "/admin/workspace-images/refresh",
    openapi_extra=error_responses({503: "Not the docker workspace backend: there are no images to refresh"})
    | optional_query(
        runtime="Only this runtime", recreate=("Recreate running containers", ("true", "false"))
    ),
)
async def refresh_images(request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    orch = ctx.orchestrator
    backend = orch.backend if orch is not None else None
    known = [rt for rt in orch.images.known() if rt != "external"] if orch is not None else []
    runtime = request.query_params.get("runtime", "")
    if runtime and runtime not in known:
        raise ApiError(400, f"unknown runtime: {runtime}", known_runtimes=known)
    if backend is None or not backend.pulls_images:
        raise ApiError(503, DOCKER_ONLY)  # DECIDE: the process backend has no images to pull
    recreate = request.query_params.get("recreate", "true") == "true"
    try:
        result = await refresh(orch, [runtime] if runtime else known, recreate)
    except RefreshError as exc:
        return JSONResponse(
            {"error": "container list failed", "partial_result": exc.result.to_dict()}, status_code=500
        )
    return JSONResponse(result.to_dict())


@router.get(
    "/workspaces/{id}/console",
    openapi_extra=error_responses(
        {501: "No workspace backend in this deployment: no console", 502: "The backend failed to read it"}
    ),
)
async def console(id: str, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    """The instance's recent output. The reference read a cloud VM's serial console through its control
    plane and answered 501 without one; with our backends it is the container's (or process's) log tail,
    which shows the same thing: why an agent did not come up. DECIDE recorded in docs/decisions.md."""
    backend = ctx.orchestrator.backend if ctx.orchestrator is not None else None
    if backend is None:
        raise ApiError(501, NO_CONSOLE)
    ws_id = parse_uuid(id)
    if ws_id is None:
        raise ApiError(404, "workspace not found")
    try:
        text = await backend.logs(ws_id, tail=CONSOLE_TAIL_LINES)
    except InstanceNotRunning:
        raise ApiError(404, "no console output: the workspace has no instance") from None
    except BackendError:
        raise ApiError(502, "failed to read console output") from None
    raw = text.encode()
    if len(raw) > CONSOLE_MAX_BYTES:  # keep the newest output, cut at a character boundary
        text = raw[-CONSOLE_MAX_BYTES:].decode("utf-8", "ignore")
    return JSONResponse({"output": text})
