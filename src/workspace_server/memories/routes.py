"""`POST|GET /workspaces/:id/memories`, `DELETE /workspaces/:id/memories/:memoryId` (WorkspaceAuth) and
the admin backup `GET /admin/memories/export`, `POST /admin/memories/import` (AdminAuth) (spec 05 §2)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.common.http import read_body, read_model
from workspace_server.common.ids import uuid_or_raw
from workspace_server.db.schema import MEMORY_SCOPES
from workspace_server.memories import service
from workspace_server.memories.service import CommitBody
from workspace_server.openapi import COUNT, body_schema, optional_query, text

router = APIRouter()


@router.post(
    "/workspaces/{id}/memories",
    status_code=201,
    openapi_extra=body_schema(
        CommitBody,
        require=("content", "scope"),
        fields={"content": text(1), "scope": {"type": "string", "enum": list(MEMORY_SCOPES)}},
    ),
)
async def commit_memory(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    body = await read_model(request, CommitBody)
    return JSONResponse(await service.commit(ctx, uuid_or_raw(id), body), status_code=201)


@router.get(
    "/workspaces/{id}/memories",
    openapi_extra=optional_query(
        scope=("Scope filter", ("LOCAL", "TEAM", "GLOBAL")),
        q="Search text",
        namespace="Namespace",
        limit=("Page size", COUNT),
    ),
)
async def search_memories(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    q = request.query_params
    items = await service.search(
        ctx,
        uuid_or_raw(id),
        scope=q.get("scope", ""),
        q=q.get("q", ""),
        namespace=q.get("namespace", ""),
        limit=service.parse_limit(q.get("limit")),
    )
    return JSONResponse(items)


@router.delete("/workspaces/{id}/memories/{memory_id}")
async def delete_memory(id: str, memory_id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    await service.delete(ctx, uuid_or_raw(id), memory_id)
    return JSONResponse({"status": "deleted"})


@router.get("/admin/memories/export")
async def export_memories(_: AdminAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.export_all(ctx))


@router.post(
    "/admin/memories/import",
    openapi_extra=body_schema(
        {"type": "array", "items": {"type": "object"}},
        description="Entries as `GET /admin/memories/export` writes them; `null` is an empty list.",
    ),
)
async def import_memories(request: Request, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    entries = service.parse_import(await read_body(request, ctx.settings.MAX_BODY_BYTES))
    return JSONResponse(await service.import_all(ctx, entries))
