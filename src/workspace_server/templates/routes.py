"""HTTP for templates (spec 02 §4): `GET /templates`, `POST /templates/import` (both AdminAuth)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx
from workspace_server.common.http import parse_json, read_body
from workspace_server.openapi import body_schema, nullable, obj, text
from workspace_server.templates import service

router = APIRouter()


@router.get("/templates")
async def list_templates(ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    items = await anyio.to_thread.run_sync(service.list_templates, ctx.settings.configs_dir)
    return JSONResponse(items)


@router.post(
    "/templates/import",
    status_code=201,
    openapi_extra=body_schema(
        obj("name", "files", name=text(1), files={"type": "object", "additionalProperties": nullable(text())})
    ),
)
async def import_template(request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    data = parse_json(await read_body(request, ctx.settings.MAX_BODY_BYTES), service.INVALID_BODY)
    req = service.parse_import_body(data)
    body = await anyio.to_thread.run_sync(service.import_template, ctx.settings, req)
    return JSONResponse(body, status_code=201)
