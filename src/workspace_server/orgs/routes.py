"""`GET /org/templates` and `POST /org/import` (AdminAuth), spec 06 §3.5."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx
from workspace_server.common.http import read_json
from workspace_server.openapi import BOOL, body_schema, nullable, obj, text
from workspace_server.orgs import service
from workspace_server.orgs.importer import OrgImporter
from workspace_server.orgs.sources import org_templates_dir
from workspace_server.workspaces.routes import external_platform_url

router = APIRouter()


@router.get("/org/templates")
async def list_org_templates(_: AdminAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_for(ctx))


@router.post(
    "/org/import",
    openapi_extra=body_schema(
        obj(dir=nullable(text()), template=nullable({"type": "object"}), force=nullable(BOOL)),
        description="Either `dir` (a directory under the org templates dir) or an inline `template`.",
        answers={201: "Imported", 207: "Partly imported: the workspaces created before a failure stay"},
    ),
)
async def import_org(request: Request, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    body = await read_json(request)
    loaded, force = service.load_request(org_templates_dir(ctx.settings), body)
    await service.preflight(ctx, loaded, force)
    status, result = await OrgImporter(ctx).run(loaded, external_platform_url(ctx.settings, request))
    return JSONResponse(result, status_code=status)
