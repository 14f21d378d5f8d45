"""Token routes: `/workspaces/:id/tokens*` (WorkspaceAuth), `/org/tokens*` (AdminAuth) and the
`/admin/workspaces/:id/test-token` hatch (no auth middleware; the handler checks; spec 03 §3)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.common.http import client_ip, read_body
from workspace_server.openapi import COUNT, body_schema, obj, optional_query, text
from workspace_server.tokens import service

router = APIRouter()


@router.get(
    "/workspaces/{id}/tokens",
    openapi_extra=optional_query(limit=("Page size", COUNT), offset=("Offset", COUNT)),
)
async def list_tokens(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> dict[str, Any]:
    limit, offset = service.page_params(request.query_params.get("limit"), request.query_params.get("offset"))
    return await service.list_workspace_tokens(ctx, id, limit, offset)


@router.post("/workspaces/{id}/tokens", status_code=201)
async def create_token(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await service.create_workspace_token(ctx, id), status_code=201)


@router.delete("/workspaces/{id}/tokens/{token_id}")
async def revoke_token(id: str, token_id: str, ctx: Ctx, _auth: WorkspaceAuth) -> dict[str, str]:
    await service.revoke_workspace_token(ctx, id, token_id)
    return {"status": "revoked"}


@router.get("/admin/workspaces/{id}/test-token")
async def test_token(id: str, request: Request, ctx: Ctx) -> dict[str, Any]:
    service.check_test_token_access(ctx, request.headers.get("authorization", ""))
    return await service.mint_test_token(ctx, id)


@router.get("/org/tokens")
async def list_org_tokens(ctx: Ctx, _auth: AdminAuth) -> dict[str, Any]:
    return await service.list_org_tokens(ctx)


@router.post(
    "/org/tokens",
    openapi_extra=body_schema(
        obj(name=text(max_length=100)), required=False, description="A body that is not JSON means no name."
    ),
)
async def mint_org_token(request: Request, ctx: Ctx, auth: AdminAuth) -> dict[str, Any]:
    service.check_mint_limit(ctx, client_ip(request))  # after auth, as upstream orders it
    raw = await read_body(request, ctx.settings.MAX_BODY_BYTES)
    name = service.parse_org_token_name(raw)
    cookie_present = bool(request.headers.get("cookie"))
    return await service.mint_org_token(ctx, auth, name, cookie_present)


@router.delete("/org/tokens/{id}")
async def revoke_org_token(id: str, ctx: Ctx, _auth: AdminAuth) -> dict[str, Any]:
    return await service.revoke_org_token(ctx, id)
