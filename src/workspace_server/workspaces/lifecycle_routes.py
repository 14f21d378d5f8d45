"""HTTP for the restart family (spec 01 §3: restart, pause, resume, hibernate) and team expand/collapse
(§4.5). WorkspaceAuth on all."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.common.errors import ApiError
from workspace_server.common.http import parse_json, read_body
from workspace_server.common.ids import parse_uuid
from workspace_server.context import AppContext
from workspace_server.openapi import BOOL, body_schema, nullable, obj, optional_query, text
from workspace_server.provisioner.config_source import parse_restart_body
from workspace_server.provisioner.orchestrator import (
    NOT_HIBERNATABLE,
    NOT_PAUSABLE,
    NOT_PAUSED,
    Orchestrator,
)
from workspace_server.workspaces import team
from workspace_server.workspaces.routes import external_platform_url
from workspace_server.workspaces.service import WorkspaceService

router = APIRouter()

RESTART_BODY_MAX = 64 * 1024


def orchestrator(ctx: AppContext) -> Orchestrator:
    """The app's orchestrator (set at start-up); one without a backend when none was registered."""
    orch = ctx.orchestrator
    if orch is None:
        orch = ctx.orchestrator = Orchestrator(ctx, None)
    return orch


def _known_id(raw: str, not_found: str) -> str:
    """A canonical UUID; anything else cannot name a row, so it is that route's 404 (never a 500)."""
    ws_id = parse_uuid(raw)
    if ws_id is None:
        raise ApiError(404, not_found)
    return ws_id


@router.post(
    "/workspaces/{id}/restart",
    openapi_extra=body_schema(
        obj(
            template=nullable(text()),
            apply_template=nullable(BOOL),
            reset=nullable(BOOL),
            rebuild_config=nullable(BOOL),
        ),
        required=False,
        errors={503: "No workspace backend in this deployment (restart needs one)"},
    ),
)
async def restart_workspace(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    ws_id = _known_id(id, "workspace not found")
    raw = await read_body(request, RESTART_BODY_MAX)
    data = None
    if raw.strip():
        data = parse_json(raw, "invalid request body")
    body = parse_restart_body(data)
    if body is None:
        raise ApiError(400, "invalid request body")
    reset_query = request.query_params.get("reset") == "true"
    return JSONResponse(await orchestrator(ctx).restart(ws_id, body, reset_query))


@router.post("/workspaces/{id}/pause")
async def pause_workspace(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await orchestrator(ctx).pause(_known_id(id, NOT_PAUSABLE)))


@router.post("/workspaces/{id}/resume")
async def resume_workspace(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await orchestrator(ctx).resume(_known_id(id, NOT_PAUSED)))


@router.post(
    "/workspaces/{id}/hibernate", openapi_extra=optional_query(force=("Hibernate even if busy", ("true",)))
)
async def hibernate_workspace(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    force = request.query_params.get("force") == "true"
    return JSONResponse(await orchestrator(ctx).hibernate(_known_id(id, NOT_HIBERNATABLE), force))


@router.post("/workspaces/{id}/expand")
async def expand_team(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    platform_url = external_platform_url(ctx.settings, request)
    return JSONResponse(await team.expand(WorkspaceService(ctx), _known_id(id, team.NOT_FOUND), platform_url))


@router.post("/workspaces/{id}/collapse")
async def collapse_team(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await team.collapse(WorkspaceService(ctx), _known_id(id, team.NOT_FOUND)))
