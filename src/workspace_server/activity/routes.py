"""Activity routes (spec 04 §4): `GET|POST /workspaces/:id/activity`, `POST /workspaces/:id/notify`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.activity import service
from workspace_server.activity.schemas import REPORTABLE_TYPES, ActivityReport, NotifyBody
from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.common.http import parse_model, read_json, read_model
from workspace_server.common.ids import uuid_or_raw
from workspace_server.openapi import COUNT, INT32, body_schema, nullable, obj, optional_query, text

router = APIRouter()


@router.get(
    "/workspaces/{id}/activity",
    openapi_extra=optional_query(
        type="Activity type", source="Source workspace id", limit=("Page size", COUNT)
    ),
)
async def list_activity(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    ws_id = uuid_or_raw(id)
    q = request.query_params
    items = await service.list_activity(
        ctx.engine, ws_id, q.get("type"), q.get("source"), service.parse_limit(q.get("limit"))
    )
    return JSONResponse(items)


@router.post(
    "/workspaces/{id}/activity",
    openapi_extra=body_schema(
        ActivityReport, fields={"activity_type": {"type": "string", "enum": list(REPORTABLE_TYPES)}}
    ),
)
async def report_activity(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    ws_id = uuid_or_raw(id)
    body = await read_model(request, ActivityReport)
    await service.report_activity(ctx.engine, ctx.events, ws_id, body)
    return JSONResponse({"status": "logged"})


@router.post(
    "/workspaces/{id}/notify",
    openapi_extra=body_schema(
        NotifyBody,
        require=("message",),
        fields={
            "message": text(1),
            "attachments": nullable(
                {
                    "type": "array",
                    "items": obj("uri", "name", uri=text(1), name=text(1), mimeType=text(), size=INT32),
                }
            ),
        },
    ),
)
async def notify(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    ws_id = uuid_or_raw(id)
    data = await read_json(request, "message is required")
    body = parse_model(NotifyBody, data, "message is required")
    await service.notify(ctx.engine, ctx.events, ws_id, body)
    return JSONResponse({"status": "sent"})
