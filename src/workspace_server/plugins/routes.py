"""Plugin routes (spec 06 §1.3): `/plugins`, `/plugins/sources` (open), `~/plugins…` (WorkspaceAuth,
download with the token re-check) and `/orgs/:id/plugins/allowlist` (AdminAuth + org ownership)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.common.errors import ApiError
from workspace_server.common.http import read_body, read_json
from workspace_server.openapi import body_schema, nullable, obj, optional_query, query_params, text
from workspace_server.plugins import allowlist, service
from workspace_server.provisioner.runtimes import REFERENCE_RUNTIMES

router = APIRouter()


@router.get("/plugins", openapi_extra=optional_query(runtime="Only plugins supporting this runtime"))
async def list_registry(request: Request, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_registry(ctx, request.query_params.get("runtime", "")))


@router.get("/plugins/sources")
async def list_sources(ctx: Ctx) -> JSONResponse:
    return JSONResponse({"schemes": service.source_registry(ctx).schemes()})


@router.get("/workspaces/{id}/plugins")
async def list_installed(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await service.list_installed(ctx, id))


@router.get("/workspaces/{id}/plugins/available")
async def list_available(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await service.list_available(ctx, id))


@router.get(
    "/workspaces/{id}/plugins/compatibility",
    openapi_extra=query_params(runtime=("The runtime to check against", REFERENCE_RUNTIMES)),
)
async def compatibility(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await service.compatibility(ctx, id, request.query_params.get("runtime", "")))


@router.post(
    "/workspaces/{id}/plugins",
    openapi_extra=body_schema(obj("source", source=text(1), sha256=nullable(text()))),
)
async def install(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    try:
        raw = await read_body(request, ctx.settings.plugin_body_max_bytes)
    except ApiError:  # over the cap: 400, not 413 (spec 06 §6)
        raise ApiError(400, "invalid request body") from None
    return JSONResponse(await service.install(ctx, id, raw))


@router.delete("/workspaces/{id}/plugins/{name}")
async def uninstall(id: str, name: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await service.uninstall(ctx, id, name))


@router.get(
    "/workspaces/{id}/plugins/{name}/download",
    openapi_extra=optional_query(source="Plugin source (default `local://<name>`)"),
)
async def download(id: str, name: str, request: Request, ctx: Ctx, auth: WorkspaceAuth) -> Response:
    data, staged = await service.download(ctx, auth, id, name, request.query_params.get("source", ""))
    headers = {
        "Content-Disposition": f'attachment; filename="{staged.name}.tar.gz"',
        "X-Plugin-Name": staged.name,
        "X-Plugin-Source": staged.source.raw,
    }
    return Response(data, media_type="application/gzip", headers=headers)


@router.get("/orgs/{id}/plugins/allowlist")
async def get_allowlist(id: str, ctx: Ctx, auth: AdminAuth) -> JSONResponse:
    return JSONResponse(await allowlist.get_allowlist(ctx, auth, id))


@router.put(
    "/orgs/{id}/plugins/allowlist",
    openapi_extra=body_schema(
        obj("enabled_by", plugins=nullable({"type": "array", "items": text(1)}), enabled_by=text(1))
    ),
)
async def put_allowlist(id: str, request: Request, ctx: Ctx, auth: AdminAuth) -> JSONResponse:
    data = await read_json(request)
    return JSONResponse(await allowlist.put_allowlist(ctx, auth, id, data))
