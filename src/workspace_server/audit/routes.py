"""`GET /workspaces/:id/audit` (WorkspaceAuth). There is no write route: the agents' ledger writes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.audit import service
from workspace_server.auth.deps import Ctx, WorkspaceAuth

router = APIRouter()


@router.get("/workspaces/{id}/audit")
async def query_audit(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    q = service.parse_query(id, request.query_params)
    return JSONResponse(await service.query(ctx, q))
