"""A2A routes: the proxy (spec 04 §1), delegation (§2) and the queue's admin tool (§1.7)."""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from workspace_server import authz
from workspace_server.a2a import delegation, queue
from workspace_server.a2a import schemas as msg
from workspace_server.a2a.proxy import MAX_REQUEST_BYTES, ProxyResult, proxy_a2a
from workspace_server.a2a.record import usage_today
from workspace_server.a2a.schemas import DelegateRequest, RecordRequest, UpdateRequest
from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.authz.actor import Credentials
from workspace_server.common.errors import ApiError
from workspace_server.common.http import first_headers, parse_model, read_json
from workspace_server.common.ids import uuid_or_raw
from workspace_server.common.routing import hot_route
from workspace_server.context import get_ctx
from workspace_server.openapi import COUNT, UUID, body_schema, describe, optional_query

log = logging.getLogger(__name__)
router = APIRouter()

_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts
MAX_STALE_MINUTES = 100_000_000  # ~190 years; larger values mean "everything" anyway


def render(result: ProxyResult) -> Response:
    if result.error is not None:
        return JSONResponse(result.error, status_code=result.status, headers=result.headers)
    return AgentReply(result.body, result.status, result.headers)


class AgentReply(Response):
    """The agent's bytes as `Response(body, status, media_type="application/json", headers=…)` sends
    them, without rendering anything: this answers every proxied message."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str]) -> None:  # not Response's
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
        self.raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _x_timeout(headers: dict[str, str]) -> int | None:
    raw = headers.get("x-timeout", "")
    if _INT.fullmatch(raw) and 0 < int(raw) < 2**31:
        return int(raw)
    return None


async def proxy(request: Request, raw: bytes) -> Response:
    """POST /workspaces/:id/a2a, a hot route (common/routing.py): no dependency injection; `raw` is the
    body's first MAX_REQUEST_BYTES (the rest is read and dropped: spec 04 §1.2, silently cut)."""
    ctx = await get_ctx(request)
    target = uuid_or_raw(request.path_params["id"])
    headers = first_headers(request.scope)
    header = headers.get("x-workspace-id", "")
    if msg.is_system_caller(header):
        # %r: the header is attacker-controlled; keep its control characters out of the log line
        log.warning("a2a: system caller prefix forged by %s: %r", request.client, header)
        raise ApiError(403, msg.INVALID_CALLER)
    caller = uuid_or_raw(header)
    # the caller workspace's token, or (no header: the canvas) the target's WorkspaceAuth credentials in
    # production mode; the open bootstrap's exceptions are the authz layer's (authz.a2a_actor)
    await authz.a2a_actor(
        ctx,
        Credentials.from_headers(headers),
        target,
        caller,
        missing=msg.MISSING_CALLER_TOKEN,
        invalid=msg.INVALID_CALLER_TOKEN,
    )
    # Run in the request's own task, not a spawned one (~13 µs a call): a caller that hangs up does not
    # abort a delivery half-way all the same, because uvicorn never cancels a request task when its
    # client goes (it only flags the disconnect), and the hot lane adds no timeout of its own.
    return render(await proxy_a2a(ctx, target, raw, caller, True, timeout_seconds=_x_timeout(headers)))


# Every agent-to-agent message passes here; served ahead of FastAPI's router (app.py).
HOT_ROUTES = [hot_route("/workspaces/{id}/a2a", proxy, "POST", keep=MAX_REQUEST_BYTES)]
describe(
    "POST",
    "/workspaces/{id}/a2a",
    {
        "tags": ["a2a"],
        "summary": "A2A proxy",
        "description": "Forwards a JSON-RPC 2.0 A2A message to the workspace's agent and relays its reply "
        "(spec 04 §1). The caller names itself in `X-Workspace-ID` (empty: the canvas/an operator, which in "
        "production mode needs the route's workspace credentials); a caller workspace holding a live token "
        "(in production mode: every caller, and a call naming the target itself) proves it with "
        "`Authorization: Bearer`. A body past "
        f"{MAX_REQUEST_BYTES} bytes is cut. An unreachable or busy agent is queued (202) or answered "
        "502/503.",
        "operationId": "proxy_workspaces__id__a2a_post",
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "X-Workspace-ID", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "X-Timeout", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        **body_schema(
            msg.A2A_REQUEST_SCHEMA,
            description="A JSON-RPC 2.0 request; `params` is passed to the agent as is.",
        ),
        "responses": {
            "200": {
                "description": "The agent's JSON-RPC reply",
                "content": {"application/json": {"schema": {}}},
            },
            "202": {"description": "The agent is busy: the message was queued"},
            "402": {"description": "The workspace's budget is exhausted"},
            "502": {"description": "The agent failed or is not routable from here"},
            "503": {"description": "The agent has no URL yet / is restarting"},
            "504": {"description": "The agent did not answer in time"},
        },
    },
)


@router.get("/workspaces/{id}/metrics")
async def token_metrics(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await usage_today(ctx, uuid_or_raw(id)))


# ---- delegation (WorkspaceAuth; :id is the delegating workspace) ----


@router.post(
    "/workspaces/{id}/delegate",
    openapi_extra=body_schema(
        DelegateRequest,
        fields={"target_id": UUID},
        answers={202: "Dispatched", 200: "The delegation this `idempotency_key` already made"},
    ),
)
async def delegate(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    data = await read_json(request, "invalid delegation request")
    body = parse_model(DelegateRequest, data, "invalid delegation request")
    status, resp = await delegation.delegate(ctx, uuid_or_raw(id), body)
    return JSONResponse(resp, status_code=status)


@router.get("/workspaces/{id}/delegations")
async def list_delegations(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await delegation.list_delegations(ctx, uuid_or_raw(id)))


@router.post(
    "/workspaces/{id}/delegations/record",
    status_code=202,
    openapi_extra=body_schema(RecordRequest, fields={"target_id": UUID}),
)
async def record_delegation(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    body = parse_model(RecordRequest, await read_json(request))
    return JSONResponse(await delegation.record(ctx, uuid_or_raw(id), body), status_code=202)


@router.post(
    "/workspaces/{id}/delegations/{delegation_id}/update",
    openapi_extra=body_schema(
        UpdateRequest, fields={"status": {"type": "string", "enum": ["completed", "failed"]}}
    ),
)
async def update_delegation(
    id: str, delegation_id: str, request: Request, _: WorkspaceAuth, ctx: Ctx
) -> JSONResponse:
    body = parse_model(UpdateRequest, await read_json(request))
    return JSONResponse(await delegation.update(ctx, uuid_or_raw(id), delegation_id, body))


# ---- queue admin ----


@router.post(
    "/admin/a2a-queue/drop-stale",
    openapi_extra=optional_query(max_age_minutes=("Minutes", COUNT), workspace_id="Only this workspace"),
)
async def drop_stale(request: Request, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    raw = request.query_params.get("max_age_minutes", str(queue.DEFAULT_STALE_MINUTES))
    if not _INT.fullmatch(raw) or not 1 <= int(raw) < 2**63:
        raise ApiError(400, "max_age_minutes must be a positive integer")
    minutes = min(int(raw), MAX_STALE_MINUTES)
    ws_id = request.query_params.get("workspace_id") or None
    dropped = await queue.drop_stale(ctx, minutes, uuid_or_raw(ws_id) if ws_id else None)
    return JSONResponse({"dropped": dropped})
