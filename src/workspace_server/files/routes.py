"""HTTP for the container files API and shared context (spec 02 §7), all under WorkspaceAuth.

Validation runs in the reference's order (path, root, depth/body, then the workspace lookup), so the
same bad request gets the same error. Starlette's `{path:path}` excludes the route's own `/`: that is
the "strip exactly one leading `/`" of the reference's wildcard, so `files//etc/passwd` arrives here as
`/etc/passwd` and is refused as absolute.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.common.http import parse_json, read_body
from workspace_server.files import service
from workspace_server.files.service import FILES_API_ROOTS, FilesService
from workspace_server.openapi import body_schema, nullable, obj, optional_query, text
from workspace_server.templates.service import check_upload_count

router = APIRouter()


async def _json(request: Request, max_bytes: int) -> Any:
    return parse_json(await read_body(request, max_bytes), service.INVALID_BODY)


@router.get(
    "/workspaces/{id}/files",
    openapi_extra=optional_query(
        root=("Root directory", FILES_API_ROOTS),
        path="Subdirectory",
        depth=("Listing depth", ("1", "2", "3", "4", "5")),
    ),
)
async def list_files(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    q = request.query_params
    root = service.parse_root(q.get("root"))
    sub = q.get("path") or ""
    rel = service.parse_rel(sub) if sub else ""
    depth = service.parse_depth(q.get("depth"))
    svc = FilesService(ctx)
    ws = await svc.workspace(id)
    return JSONResponse(await svc.list_files(ws, root, rel, depth))


@router.put(
    "/workspaces/{id}/files",
    openapi_extra=body_schema(
        obj("files", files={"type": "object", "additionalProperties": nullable(text())}),
        errors={
            500: "The write failed in the workspace (the reference's `failed to write file: <err>`)",
            503: "No workspace backend in this deployment",
        },
    ),
)
async def replace_files(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    files = service.parse_files_body(await _json(request, ctx.settings.MAX_BODY_BYTES))
    check_upload_count(files)
    svc = FilesService(ctx)
    ws = await svc.workspace(id)
    return JSONResponse(await svc.replace_files(ws, files))


@router.get(
    "/workspaces/{id}/files/{path:path}",
    openapi_extra=optional_query(root=("Root directory", FILES_API_ROOTS)),
)
async def read_file(id: str, path: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    rel = service.parse_rel(path)
    root = service.parse_root(request.query_params.get("root"))
    svc = FilesService(ctx)
    ws = await svc.workspace(id)
    return JSONResponse(await svc.read_file(ws, root, path, rel))


@router.put(
    "/workspaces/{id}/files/{path:path}",
    openapi_extra=body_schema(
        obj(content=nullable(text())),
        errors={
            500: "The write failed in the workspace (the reference's `failed to write file: <err>`)",
            503: "No workspace backend in this deployment",
        },
    ),
)
async def write_file(id: str, path: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    rel = service.parse_rel(path)
    content = service.parse_content_body(await _json(request, ctx.settings.MAX_BODY_BYTES))
    svc = FilesService(ctx)
    ws = await svc.workspace(id)
    return JSONResponse(await svc.write_file(ws, path, rel, content))


@router.delete("/workspaces/{id}/files/{path:path}")
async def delete_file(id: str, path: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    rel = service.parse_rel(path)
    svc = FilesService(ctx)
    ws = await svc.workspace(id)
    return JSONResponse(await svc.delete_file(ws, path, rel))


@router.get("/workspaces/{id}/shared-context")
async def shared_context(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    svc = FilesService(ctx)
    ws = await svc.workspace(id)
    return JSONResponse(await svc.shared_context(ws))
