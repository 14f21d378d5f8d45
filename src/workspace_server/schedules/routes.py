"""Schedule routes (spec 05 §6): CRUD, run-now, history (WorkspaceAuth), the peer health view (the
caller authenticates in the handler) and the operators' health overview (AdminAuth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server import authz
from workspace_server.a2a import schemas as a2a_msg
from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth, credentials
from workspace_server.common.errors import ApiError
from workspace_server.common.http import read_model
from workspace_server.common.ids import uuid_or_raw
from workspace_server.context import AppContext
from workspace_server.openapi import body_schema, nullable, text
from workspace_server.registry.access import can_communicate
from workspace_server.schedules import service
from workspace_server.schedules.service import REQUIRED, CreateBody, UpdateBody

router = APIRouter()

# what service.create accepts: a 5-field cron expression (croniter's dialect; this pattern is a subset)
# and an IANA zone ("" is UTC)
CRON = text(
    1,
    pattern=r"^(\*|[1-5]?[0-9]|\*/[1-9]) (\*|1?[0-9]|2[0-3]) (\*|[1-9]|[12][0-9]) "
    r"(\*|[1-9]|1[0-2]) (\*|[0-6])$",
    examples=["*/5 * * * *", "0 9 * * 1"],
)
TZ = {"type": "string", "enum": ["", "UTC", "Europe/Paris", "America/New_York"]}


@router.get("/workspaces/{id}/schedules")
async def list_schedules(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_schedules(ctx, uuid_or_raw(id)))


@router.post(
    "/workspaces/{id}/schedules",
    status_code=201,
    openapi_extra=body_schema(
        CreateBody,
        require=("cron_expr", "prompt"),
        fields={"cron_expr": CRON, "prompt": text(1), "timezone": TZ},
    ),
)
async def create_schedule(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    body = await read_model(request, CreateBody, REQUIRED)
    return JSONResponse(await service.create(ctx, uuid_or_raw(id), body), status_code=201)


# registered before `/{schedule_id}` routes so "health" is never read as a schedule id
@router.get("/workspaces/{id}/schedules/health")
async def schedules_health(id: str, request: Request, ctx: Ctx) -> JSONResponse:
    target = uuid_or_raw(id)
    await _authorize_peer(ctx, request, target)
    return JSONResponse(await service.health(ctx, target))


async def _authorize_peer(ctx: AppContext, request: Request, target: str) -> None:
    """The caller names itself in X-Workspace-ID and proves it with its own token once it has one.

    Unlike the reference, a system prefix is refused (only in-process callers use those) and a caller
    naming the target itself still needs the target's token (spec 06 §6).
    """
    header = request.headers.get("x-workspace-id", "")
    if not header:
        raise ApiError(401, "X-Workspace-ID header required")
    if a2a_msg.is_system_caller(header):
        raise ApiError(403, a2a_msg.INVALID_CALLER)
    caller = uuid_or_raw(header)
    await authz.token_holder(
        ctx,
        credentials(request),
        caller,
        tokenless="open_bootstrap",
        missing=a2a_msg.MISSING_CALLER_TOKEN,
        invalid=a2a_msg.INVALID_CALLER_TOKEN,
    )
    if not await can_communicate(ctx.engine, caller, target):
        raise ApiError(403, "access denied")


@router.patch(
    "/workspaces/{id}/schedules/{schedule_id}",
    openapi_extra=body_schema(UpdateBody, fields={"cron_expr": nullable(CRON), "timezone": nullable(TZ)}),
)
async def update_schedule(
    id: str, schedule_id: str, request: Request, _: WorkspaceAuth, ctx: Ctx
) -> JSONResponse:
    body = await read_model(request, UpdateBody, "invalid JSON")
    await service.update(ctx, uuid_or_raw(id), schedule_id, body)
    return JSONResponse({"status": "updated"})


@router.delete("/workspaces/{id}/schedules/{schedule_id}")
async def delete_schedule(id: str, schedule_id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    await service.delete(ctx, uuid_or_raw(id), schedule_id)
    return JSONResponse({"status": "deleted"})


@router.post("/workspaces/{id}/schedules/{schedule_id}/run")
async def run_schedule(id: str, schedule_id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.run_now(ctx, uuid_or_raw(id), schedule_id))


@router.get("/workspaces/{id}/schedules/{schedule_id}/history")
async def schedule_history(id: str, schedule_id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.history(ctx, uuid_or_raw(id), schedule_id))


@router.get("/admin/schedules/health")
async def admin_schedules_health(_: AdminAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.admin_health(ctx))
