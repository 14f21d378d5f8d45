"""`GET /bundles/export/:id` and `POST /bundles/import` (AdminAuth; spec 06 §3.4)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx
from workspace_server.bundles import service
from workspace_server.bundles.schemas import Bundle
from workspace_server.common.http import read_body
from workspace_server.openapi import body_schema

router = APIRouter()


@router.get("/bundles/export/{id}")
async def export_bundle(id: str, ctx: Ctx, _auth: AdminAuth) -> dict[str, Any]:
    return await service.export_bundle(ctx, id)


@router.post("/bundles/import", status_code=201, openapi_extra=body_schema(Bundle))
async def import_bundle(request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    raw = await read_body(request, ctx.settings.MAX_BODY_BYTES)
    bundle = service.parse_bundle(raw)
    return JSONResponse(await service.import_bundle(ctx, bundle), status_code=201)
