"""`POST|PATCH|DELETE /workspaces/:id/agent` and `POST /workspaces/:id/agent/move` (WorkspaceAuth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.agents import service
from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.common.errors import ApiError
from workspace_server.common.http import read_json
from workspace_server.common.ids import parse_uuid
from workspace_server.openapi import UUID, body_schema, obj, text

router = APIRouter()


def _ws(raw: str) -> str:
    ws_id = parse_uuid(raw)
    if ws_id is None:
        raise ApiError(404, service.WS_NOT_FOUND)
    return ws_id


@router.post(
    "/workspaces/{id}/agent", status_code=201, openapi_extra=body_schema(obj("model", model=text(1)))
)
async def assign_agent(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    model = service.required_text(await read_json(request), "model")
    return JSONResponse(await service.assign(ctx, _ws(id), model), status_code=201)


@router.patch("/workspaces/{id}/agent", openapi_extra=body_schema(obj("model", model=text(1))))
async def replace_agent(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    model = service.required_text(await read_json(request), "model")
    return JSONResponse(await service.replace(ctx, _ws(id), model))


@router.delete("/workspaces/{id}/agent")
async def remove_agent(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.remove(ctx, _ws(id)))


@router.post(
    "/workspaces/{id}/agent/move",
    openapi_extra=body_schema(obj("target_workspace_id", target_workspace_id=UUID)),
)
async def move_agent(id: str, request: Request, auth: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    target = service.required_text(await read_json(request), "target_workspace_id")
    return JSONResponse(await service.move(ctx, _ws(id), target, auth))
