"""`POST|GET /workspaces/:id/approvals`, `POST …/approvals/:approvalId/decide` (WorkspaceAuth) and
`GET /approvals/pending` (AdminAuth), spec 05 §4."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.approvals import service
from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.common.http import read_json
from workspace_server.openapi import body_schema, text

router = APIRouter()


@router.post(
    "/workspaces/{id}/approvals",
    status_code=201,
    openapi_extra=body_schema(service.CreateBody, require=("action",), fields={"action": text(1)}),
)
async def create_approval(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    data = await read_json(request, service.BAD_BODY, ctx.settings.MAX_BODY_BYTES)
    body = service.parse_create(data)
    return JSONResponse(await service.create(ctx, id, body), status_code=201)


@router.get("/workspaces/{id}/approvals")
async def list_approvals(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_for_workspace(ctx, id))


@router.post(
    "/workspaces/{id}/approvals/{approval_id}/decide",
    openapi_extra=body_schema(
        service.DecideBody,
        require=("decision",),
        fields={"decision": {"type": "string", "enum": list(service.DECISIONS)}},
    ),
)
async def decide_approval(
    id: str, approval_id: str, request: Request, auth: WorkspaceAuth, ctx: Ctx
) -> JSONResponse:
    data = await read_json(request, service.BAD_BODY, ctx.settings.MAX_BODY_BYTES)
    body = service.parse_decide(data)
    return JSONResponse(await service.decide(ctx, id, approval_id, body, auth))


@router.get("/approvals/pending")
async def list_pending_approvals(_: AdminAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_pending(ctx))
