"""`/instructions[/:id]` (AdminAuth) and `GET /workspaces/:id/instructions/resolve` (WorkspaceAuth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.common.http import read_model
from workspace_server.instructions import service
from workspace_server.instructions.service import CREATE_REQUIRED, CreateBody, UpdateBody
from workspace_server.openapi import INT32, UUID, body_schema, nullable, optional_query, text

router = APIRouter()


@router.get(
    "/instructions",
    openapi_extra=optional_query(
        scope=("Scope filter", ("global", "workspace")), workspace_id="A workspace id"
    ),
)
async def list_instructions(request: Request, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    q = request.query_params
    items = await service.list_instructions(
        ctx, scope=q.get("scope", ""), workspace_id=q.get("workspace_id", "")
    )
    return JSONResponse(items)


@router.post(
    "/instructions",
    status_code=201,
    openapi_extra=body_schema(
        CreateBody,
        require=("scope", "title", "content"),
        fields={
            "scope": {"type": "string", "enum": ["global", "workspace"]},
            "scope_target": nullable(UUID),
            "title": text(1, 50),
            "content": text(1, 2048),
            "priority": INT32,
        },
    ),
)
async def create_instruction(request: Request, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    body = await read_model(request, CreateBody, CREATE_REQUIRED)
    return JSONResponse({"id": await service.create(ctx, body)}, status_code=201)


@router.put(
    "/instructions/{instruction_id}",
    openapi_extra=body_schema(
        UpdateBody,
        fields={
            "title": nullable(text(0, 50)),
            "content": nullable(text(0, 2048)),
            "priority": nullable(INT32),
        },
    ),
)
async def update_instruction(instruction_id: str, request: Request, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    body = await read_model(request, UpdateBody, "invalid request")
    await service.update(ctx, instruction_id, body)
    return JSONResponse({"status": "updated"})


@router.delete("/instructions/{instruction_id}")
async def delete_instruction(instruction_id: str, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    await service.delete(ctx, instruction_id)
    return JSONResponse({"status": "deleted"})


@router.get("/workspaces/{id}/instructions/resolve")
async def resolve_instructions(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.resolve(ctx, id))
