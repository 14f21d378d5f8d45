"""`GET /workspaces/:id/audit` (WorkspaceAuth). There is no write route: the agents' ledger writes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.audit import service
from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.openapi import COUNT, optional_query

router = APIRouter()
INSTANT = {
    "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$"
}


@router.get(
    "/workspaces/{id}/audit",
    openapi_extra=optional_query(
        **{"from": ("RFC 3339 instant", INSTANT), "to": ("RFC 3339 instant", INSTANT)},
        agent_id="Agent id",
        session_id="Session id",
        limit=("Page size", COUNT),
        offset=("Offset", COUNT),
    ),
)
async def query_audit(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    q = service.parse_query(id, request.query_params)
    return JSONResponse(await service.query(ctx, q))
