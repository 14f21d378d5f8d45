"""HTTP for workspaces core (spec 01 §3): parse, authorise, call WorkspaceService, render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from workspace_server.auth.deps import AdminAuth, CanvasOrBearer, Ctx, WorkspaceAuth
from workspace_server.common.errors import ApiError
from workspace_server.common.http import INVALID_JSON, bearer_token, parse_json, parse_model, read_body
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonnum import decode_document
from workspace_server.config import Settings
from workspace_server.openapi import BOOL, ERROR_REF, INT32, NUMBER, UUID, body_schema, nullable, obj, text
from workspace_server.workspaces.schemas import (
    FIELD_PATTERN,
    LINE_PATTERN,
    MODEL_MAX,
    NAME_MAX,
    ROLE_MAX,
    RUNTIME_MAX,
    WORKSPACE_ACCESS_VALUES,
    CreateWorkspace,
    as_number,
)
from workspace_server.workspaces.service import WorkspaceService

router = APIRouter()

CONFIG_PATCH_MAX_BYTES = 256 * 1024


async def _json_body(request: Request, error: str, max_bytes: int) -> Any:
    """The decoded body, or ApiError(400, error) for anything Go's decoder would refuse."""
    return parse_json(await read_body(request, max_bytes), error)


async def _json_object(request: Request, error: str, max_bytes: int) -> dict[str, Any]:
    data = await _json_body(request, error, max_bytes)
    if not isinstance(data, dict):
        raise ApiError(400, error)
    return data


def _valid_id(raw: str) -> str:
    ws_id = parse_uuid(raw)
    if ws_id is None:  # #687: garbage ids are a 400 before any SQL
        raise ApiError(400, "invalid workspace ID")
    return ws_id


def external_platform_url(settings: Settings, request: Request) -> str:
    """Where an external agent reaches this server: EXTERNAL_PLATFORM_URL, else the request's own origin."""
    url = settings.EXTERNAL_PLATFORM_URL
    if not url:
        scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        url = f"{scheme}://{host}"
    return url.removesuffix("/")


# workspace_dir_ok: absolute, no `..`, not a system directory (a subset, as a pattern)
WORKSPACE_DIR_PATTERN = "^/(home|tmp|srv|opt|workspace)(/[a-z0-9_-]+)*$"
# PATCH /workspaces/:id: every key optional; values of the wrong type are skipped, not refused
PATCH_WORKSPACE = obj(
    name=text(max_length=NAME_MAX, pattern=FIELD_PATTERN),
    role=nullable(text(max_length=ROLE_MAX, pattern=FIELD_PATTERN)),
    runtime=text(max_length=RUNTIME_MAX, pattern=LINE_PATTERN),
    tier=INT32,
    parent_id=nullable(UUID),
    workspace_dir=nullable(text(pattern=WORKSPACE_DIR_PATTERN)),
    workspace_access=nullable({"type": "string", "enum": list(WORKSPACE_ACCESS_VALUES)}),
    hibernation_idle_minutes=nullable({"type": "integer", "minimum": 0, "maximum": 2**31 - 1}),
    collapsed=BOOL,
    x=NUMBER,
    y=NUMBER,
)
# the two answers that carry no `error` key (spec 01 §3, §4.4)
_REMOVED = obj("workspace_id", "deleted", workspace_id=text(), deleted=BOOL)
STATE_RESPONSES = {
    "responses": {
        "404": {
            "description": "No such workspace (or removed): `{workspace_id, deleted: true, …}`",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            obj("workspace_id", "deleted", workspace_id=text(), deleted=BOOL),
                            ERROR_REF,
                        ]
                    }
                }
            },
        }
    }
}
DELETE_RESPONSES = {
    "parameters": [
        {"name": "confirm", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true"]}},
        {"name": "purge", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true"]}},
    ],
    "responses": {
        "409": {
            "description": "The workspace has children: repeat with `?confirm=true`",
            "content": {
                "application/json": {
                    "schema": obj(
                        "status",
                        "children",
                        status={"type": "string", "enum": ["confirmation_required"]},
                        children={"type": "array", "items": {"type": "object"}},
                        children_count={"type": "integer"},
                        message=text(),
                    )
                }
            },
        }
    },
}


# ---- collection ----


@router.post(
    "/workspaces",
    status_code=201,
    openapi_extra=body_schema(
        CreateWorkspace,
        require=("name",),
        fields={
            "name": text(1, NAME_MAX // 4, pattern=FIELD_PATTERN),
            "role": nullable(text(0, ROLE_MAX // 4, pattern=FIELD_PATTERN)),
            "runtime": nullable(text(0, RUNTIME_MAX // 4, pattern=LINE_PATTERN)),
            "model": nullable(text(0, MODEL_MAX // 4, pattern=LINE_PATTERN)),
            "parent_id": nullable(UUID),
            "budget_limit": nullable({"type": "integer", "minimum": 0, "maximum": 2**63 - 1}),
            "workspace_dir": nullable(text(pattern=WORKSPACE_DIR_PATTERN)),
            "workspace_access": nullable({"type": "string", "enum": list(WORKSPACE_ACCESS_VALUES)}),
        },
        errors={
            409: "A workspace with that name exists under the same parent",
            503: "Provisioning backend unavailable",
        },
    ),
)
async def create_workspace(request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    raw = await read_body(request, ctx.settings.MAX_BODY_BYTES)
    # strings are judged by the create rules (`invalid workspace fields`, docs/decisions.md), the rest here
    data = parse_json(raw, "invalid workspace payload", check_strings=False)
    payload = parse_model(CreateWorkspace, data, "invalid workspace payload")
    body = await WorkspaceService(ctx).create(payload, external_platform_url(ctx.settings, request))
    return JSONResponse(body, status_code=201)


@router.get("/workspaces")
async def list_workspaces(ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    return JSONResponse(await WorkspaceService(ctx).list_views())


# ---- one workspace ----


@router.get("/workspaces/{id}")
async def get_workspace(id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await WorkspaceService(ctx).get_view(_valid_id(id)))


@router.patch("/workspaces/{id}", openapi_extra=body_schema(PATCH_WORKSPACE))
async def update_workspace(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    ws_id = _valid_id(id)
    raw = await read_body(request, ctx.settings.MAX_BODY_BYTES)
    # A body that is not JSON, or that the server could not keep (`1e400`: Go's decoder refuses a number
    # beyond float64 too; NUL or a lone surrogate outside the checked fields), is judged after the field
    # rules and the existence check: 400 `invalid request body`, the reference's order.
    try:
        decoded = decode_document(raw, check_strings=False)  # strings: WorkspaceService.update
    except (ValueError, UnicodeDecodeError):
        decoded = None
    body = decoded if isinstance(decoded, dict) else None
    return JSONResponse(await WorkspaceService(ctx).update(ws_id, body))


@router.delete("/workspaces/{id}", openapi_extra=DELETE_RESPONSES)
async def delete_workspace(id: str, request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    ws_id = _valid_id(id)
    q = request.query_params
    body = await WorkspaceService(ctx).delete(
        ws_id, confirm=q.get("confirm") == "true", purge=q.get("purge") == "true"
    )
    return JSONResponse(body)


@router.get("/workspaces/{id}/state", openapi_extra=STATE_RESPONSES)
async def workspace_state(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    status, body = await WorkspaceService(ctx).state(id, bearer_token(request))
    return JSONResponse(body, status_code=status)


@router.get("/workspaces/{id}/config")
async def get_config(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await WorkspaceService(ctx).get_config(id))


@router.patch(
    "/workspaces/{id}/config",
    openapi_extra=body_schema(
        obj(),
        max_bytes=CONFIG_PATCH_MAX_BYTES,
        description="Keys merged into the stored config (JSON values).",
    ),
)
async def patch_config(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    try:
        raw = await read_body(request, CONFIG_PATCH_MAX_BYTES, "body too large or unreadable")
    except ClientDisconnect:
        raise ApiError(413, "body too large or unreadable") from None
    data = parse_json(raw, INVALID_JSON)
    if not isinstance(data, dict):  # only an object can be merged key by key
        raise ApiError(400, INVALID_JSON)
    return JSONResponse(await WorkspaceService(ctx).patch_config(id, data))


@router.get("/workspaces/{id}/budget")
async def get_budget(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> JSONResponse:
    return JSONResponse(await WorkspaceService(ctx).get_budget(id))


@router.patch(
    "/workspaces/{id}/budget",
    openapi_extra=body_schema(
        obj("budget_limit", budget_limit=nullable({"type": "integer", "minimum": 0, "maximum": 2**63 - 1}))
    ),
)
async def patch_budget(id: str, request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    body = await _json_object(request, "invalid request body", ctx.settings.MAX_BODY_BYTES)
    return JSONResponse(await WorkspaceService(ctx).patch_budget(id, body))


@router.post(
    "/admin/workspaces/{id}/bootstrap-failed",
    openapi_extra=body_schema(obj(error=nullable(text()), log_tail=nullable(text()))),
)
async def bootstrap_failed(id: str, request: Request, ctx: Ctx, _auth: AdminAuth) -> JSONResponse:
    # a log tail is whatever the container printed, NUL included: the service strips it before storing
    raw = await read_body(request, ctx.settings.MAX_BODY_BYTES)
    body = parse_json(raw, "invalid request body", allow_nul=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid request body")
    error, tail = body.get("error"), body.get("log_tail")
    if not isinstance(error, str | None) or not isinstance(tail, str | None):
        raise ApiError(400, "invalid request body")
    return JSONResponse(await WorkspaceService(ctx).bootstrap_failed(id, error or "", tail or ""))


# ---- canvas viewport ----


@router.get("/canvas/viewport")
async def get_viewport(ctx: Ctx) -> JSONResponse:
    return JSONResponse(await WorkspaceService(ctx).get_viewport())


@router.put(
    "/canvas/viewport",
    openapi_extra=body_schema(obj(x=nullable(NUMBER), y=nullable(NUMBER), zoom=nullable(NUMBER))),
)
async def save_viewport(request: Request, ctx: Ctx, _auth: CanvasOrBearer) -> JSONResponse:
    body = await _json_object(request, "invalid viewport data", ctx.settings.MAX_BODY_BYTES)
    coords: list[float] = []
    for key in ("x", "y", "zoom"):
        value = body.get(key)
        n = 0.0 if value is None else as_number(value)
        if n is None:
            raise ApiError(400, "invalid viewport data")
        coords.append(n)
    return JSONResponse(await WorkspaceService(ctx).save_viewport(*coords))
