"""Read-side activity routes (spec 04 §4): `session-search`, `transcript`, `traces` (all WorkspaceAuth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from workspace_server.activity import session_search as search
from workspace_server.activity import traces, transcript
from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.common.ids import uuid_or_raw
from workspace_server.openapi import COUNT, error_responses, optional_query

router = APIRouter()


@router.get(
    "/workspaces/{id}/session-search",
    openapi_extra=optional_query(q="Search text", limit=("Page size", COUNT)),
)
async def session_search(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    q, limit = search.parse_params(request.query_params.get("q"), request.query_params.get("limit"))
    return JSONResponse(await search.session_search(ctx.engine, uuid_or_raw(id), q, limit))


@router.get(
    "/workspaces/{id}/transcript",
    openapi_extra=optional_query(since="Forwarded to the agent", limit=("Forwarded to the agent", COUNT))
    | error_responses({502: "The agent failed", 503: "The workspace has no reachable agent URL"}),
)
async def get_transcript(id: str, request: Request, auth: WorkspaceAuth, ctx: Ctx) -> Response:
    # The caller's bearer is forwarded only when it is the workspace's own token: that is the one the
    # agent can verify, and an admin or org token must never be handed to an agent-chosen URL.
    forward = request.headers.get("authorization", "") if auth.kind == "workspace_token" else ""
    q = request.query_params
    up = await transcript.fetch_transcript(
        ctx, uuid_or_raw(id), since=q.get("since", ""), limit=q.get("limit", ""), authorization=forward
    )
    return Response(up.body, status_code=up.status, media_type=up.content_type)


@router.get("/workspaces/{id}/traces")
async def list_traces(id: str, _: WorkspaceAuth, ctx: Ctx) -> Response:
    reply = await traces.list_traces(ctx, uuid_or_raw(id))
    if reply.body is None:
        return JSONResponse([])
    return Response(reply.body, status_code=reply.status, media_type="application/json")
