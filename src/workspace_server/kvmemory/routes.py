"""`GET|POST /workspaces/:id/memory`, `GET|DELETE /workspaces/:id/memory/:key` (WorkspaceAuth, spec 05 §3)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.common.http import read_json
from workspace_server.kvmemory import service
from workspace_server.openapi import body_schema

router = APIRouter()


@router.get("/workspaces/{id}/memory")
async def list_memory(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_entries(ctx, id))


@router.post("/workspaces/{id}/memory", openapi_extra=body_schema(service.SET_SCHEMA))
async def set_memory(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    data = await read_json(request, service.BAD_BODY, ctx.settings.MAX_BODY_BYTES)
    return JSONResponse(await service.set_entry(ctx, id, service.parse_set(data)))


@router.get("/workspaces/{id}/memory/{key}")
async def get_memory(id: str, key: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.get_entry(ctx, id, key))


@router.delete("/workspaces/{id}/memory/{key}")
async def delete_memory(id: str, key: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    await service.delete_entry(ctx, id, key)
    return JSONResponse({"status": "deleted"})
