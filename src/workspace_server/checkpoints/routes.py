"""`POST /workspaces/:id/checkpoints`, `GET …/checkpoints/latest`, `GET|DELETE …/checkpoints/:wfid` (WS).

`latest` is declared before the `:wfid` routes so it is not taken for a workflow id (as upstream).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.checkpoints import service
from workspace_server.common.http import read_json
from workspace_server.openapi import body_schema

router = APIRouter()


@router.post("/workspaces/{id}/checkpoints", status_code=201, openapi_extra=body_schema(service.STEP_SCHEMA))
async def upsert_checkpoint(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    step = service.parse_step(await read_json(request, service.BAD_BODY, ctx.settings.MAX_BODY_BYTES))
    return JSONResponse(await service.upsert(ctx, id, step), status_code=201)


@router.get("/workspaces/{id}/checkpoints/latest")
async def latest_checkpoint(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.latest(ctx, id))


@router.get("/workspaces/{id}/checkpoints/{wfid}")
async def list_checkpoints(id: str, wfid: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_workflow(ctx, id, wfid))


@router.delete("/workspaces/{id}/checkpoints/{wfid}")
async def delete_checkpoints(id: str, wfid: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.delete_workflow(ctx, id, wfid))
