"""`/registry/*`: agent registration, heartbeats, agent cards, discovery (spec 03 §1).

No route middleware: each handler authenticates in-handler as the reference does (the grandfather rule
for register/heartbeat/update-card; `validate_discovery_caller` for discovery and peers; none for
check-access).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from workspace_server import authz
from workspace_server.auth.deps import Ctx, credentials, grandfathered_caller
from workspace_server.auth.tokens import hash_token
from workspace_server.authz.actor import WORKSPACE
from workspace_server.common.errors import ApiError
from workspace_server.common.http import bearer_token, parse_json, read_model
from workspace_server.common.ids import parse_uuid, uuid_or_raw
from workspace_server.common.routing import PrebuiltResponse, hot_route
from workspace_server.context import get_ctx
from workspace_server.egress import UnsafeURL, validate_agent_url
from workspace_server.openapi import UUID, body_schema, describe
from workspace_server.registry import service
from workspace_server.registry.batch import BatchFailed, Beat
from workspace_server.registry.schemas import (
    CheckAccessRequest,
    Heartbeat,
    HeartbeatRequest,
    RegisterRequest,
    UpdateCardRequest,
    parse_heartbeat,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/registry", tags=["registry"])

INVALID_BODY = "invalid request body"
# validate_agent_url: http(s), a host (loopback only outside production), no userinfo
AGENT_URL = {
    "type": "string",
    "format": "uri",
    "pattern": "^https?://",
    "examples": ["https://agent.example.com/"],
}
_STATUS_OK = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def _workspace_id(raw: str) -> str:
    """Body ids must be UUIDs; anything else is a bad body (upstream let Postgres 500 on it)."""
    ws_id = parse_uuid(raw)
    if ws_id is None:
        raise ApiError(400, INVALID_BODY)
    return ws_id


@router.post(
    "/register",
    openapi_extra=body_schema(RegisterRequest, fields={"id": UUID, "url": AGENT_URL, "agent_card": {}}),
)
async def register(request: Request, ctx: Ctx) -> JSONResponse:
    body = await read_model(request, RegisterRequest)
    ws_id = _workspace_id(body.id)
    try:
        await validate_agent_url(body.url, ctx.settings)
    except UnsafeURL as exc:
        log.warning("registry: rejected agent url for %s: %s", ws_id, exc)
        raise ApiError(400, INVALID_BODY) from None
    # Only the workspace itself (its token), the open-bootstrap first caller or, in production mode, an
    # admin for a tokenless workspace get here; anyone else is a 401 before the url or anything is written.
    caller = await grandfathered_caller(ctx, request, ws_id)
    token = await service.register(ctx, ws_id, body.url, body.agent_card, mint=caller.kind != WORKSPACE)
    if token is not None:
        return JSONResponse({"auth_token": token, "status": "registered"})
    return JSONResponse({"status": "registered"})


async def heartbeat(request: Request, raw: bytes) -> Response:
    """POST /registry/heartbeat. A hot route (see HOT_ROUTES): the request and its whole body."""
    ctx = await get_ctx(request)
    body = parse_heartbeat(parse_json(raw, INVALID_BODY), INVALID_BODY)
    ws_id = _workspace_id(body.workspace_id)
    batcher = service.batcher(ctx)
    if batcher is not None:
        try:
            result = await batcher.submit(_beat(ws_id, body, bearer_token(request)))
        except BatchFailed:
            pass  # answered by the per-step path below, with its own error statuses
        else:
            if not result.denied:
                pending, at = result.queue_pending, result.at
                await service.after_heartbeat(ctx, ws_id, body, result.snapshot, queue_pending=pending, at=at)
                return _ok()
            denial = authz.batch_denial(ctx.settings, credentials(request))
            if denial is not None:
                raise denial
            # production mode: the batch knows workspace tokens only; an admin bearer acting for a tokenless
            # workspace is decided by the per-step path below (nothing was written)
    await grandfathered_caller(ctx, request, ws_id)
    await service.heartbeat(ctx, ws_id, body)
    return _ok()


# rendered once: every heartbeat gets the same answer
_OK = PrebuiltResponse(JSONResponse({"status": "ok"}))


def _ok() -> Response:
    return _OK


def _beat(ws_id: str, body: Heartbeat, bearer: str) -> Beat:
    return Beat(
        workspace_id=ws_id,
        token_hash=hash_token(bearer) if bearer else None,
        error_rate=body.error_rate,
        sample_error=body.sample_error,
        active_tasks=body.active_tasks,
        uptime_seconds=body.uptime_seconds,
        current_task=body.current_task,
        monthly_spend=body.monthly_spend,
    )


# Every agent beats every 30 s: route matching through the included routers and FastAPI's dependency
# solver were half of a heartbeat's CPU (common/routing.py).
HOT_ROUTES = [hot_route("/registry/heartbeat", heartbeat, "POST")]
describe(
    "POST",
    "/registry/heartbeat",
    {
        "tags": ["registry"],
        "summary": "Heartbeat",
        "description": "An agent reports its health every ~30 s (spec 03 §1.3). Grandfather rule: once the "
        "workspace holds a live token, `Authorization: Bearer <its token>` is required.",
        "operationId": "heartbeat_registry_heartbeat_post",
        **body_schema(HeartbeatRequest, fields={"workspace_id": UUID}),
        "responses": {
            "200": {
                "description": "Recorded (also for unknown ids)",
                "content": {"application/json": {"schema": _STATUS_OK}},
            },
            "401": {"description": "The workspace has a token and the bearer is missing or wrong"},
        },
    },
)


@router.post(
    "/update-card",
    openapi_extra=body_schema(UpdateCardRequest, fields={"workspace_id": UUID, "agent_card": {}}),
)
async def update_card(request: Request, ctx: Ctx) -> JSONResponse:
    body = await read_model(request, UpdateCardRequest)
    ws_id = _workspace_id(body.workspace_id)
    await grandfathered_caller(ctx, request, ws_id)
    await service.update_card(ctx, ws_id, body.agent_card)
    return JSONResponse({"status": "updated"})


@router.get("/discover/{target_id}")
async def discover(target_id: str, request: Request, ctx: Ctx) -> JSONResponse:
    caller = request.headers.get("x-workspace-id", "")
    if not caller:
        raise ApiError(400, "X-Workspace-ID header is required")
    caller = uuid_or_raw(caller)
    await authz.discovery_actor(ctx, credentials(request), caller)
    return JSONResponse(await service.discover(ctx, caller, uuid_or_raw(target_id)))


@router.get("/{ws_id}/peers")
async def peers(ws_id: str, request: Request, ctx: Ctx, q: str = "") -> JSONResponse:
    ws_id = uuid_or_raw(ws_id)
    await authz.discovery_actor(ctx, credentials(request), ws_id)
    return JSONResponse(await service.peers(ctx, ws_id, q))


@router.post(
    "/check-access",
    openapi_extra=body_schema(CheckAccessRequest, fields={"caller_id": UUID, "target_id": UUID}),
)
async def check_access(request: Request, ctx: Ctx) -> JSONResponse:
    # Unauthenticated as in the reference (spec 03 §1.7); see docs/decisions.md "registry".
    body = await read_model(request, CheckAccessRequest)
    allowed = await service.check_access(ctx, uuid_or_raw(body.caller_id), uuid_or_raw(body.target_id))
    return JSONResponse({"allowed": allowed})
