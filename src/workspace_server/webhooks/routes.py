"""Webhook routes (open: each authenticates its sender itself)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from workspace_server.a2a.routes import render
from workspace_server.auth.deps import Ctx
from workspace_server.common.errors import ApiError
from workspace_server.common.http import read_body
from workspace_server.openapi import body_schema
from workspace_server.webhooks import github

router = APIRouter()
WEBHOOK_ANSWERS = {
    200: "Schedules made due",
    202: "Ignored, or forwarded to the workspace over A2A (then the agent's answer, as the proxy's)",
}


async def _github(request: Request, ctx: Ctx, path_id: str | None) -> Response:
    secret = ctx.settings.GITHUB_WEBHOOK_SECRET.strip()
    if not secret:
        raise ApiError(503, "github webhook not configured")
    body = await read_body(request, github.MAX_BODY_BYTES)
    if not github.verify_signature(secret, body, request.headers.get("x-hub-signature-256", "")):
        raise ApiError(401, "invalid webhook signature")
    event = request.headers.get("x-github-event", "")
    delivery = request.headers.get("x-github-delivery", "")
    outcome = await github.handle(ctx, event, delivery, body, path_id)
    if isinstance(outcome, tuple):
        status, payload = outcome
        return JSONResponse(payload, status_code=status)
    return render(outcome)


def _github_body() -> dict[str, Any]:
    """Each route gets its own copy: the schema builder completes operations in place."""
    return body_schema(
        {"type": "object"},
        description="A GitHub webhook delivery, signed (`X-Hub-Signature-256`).",
        errors={503: "GITHUB_WEBHOOK_SECRET is not set: webhooks are off in this deployment"},
        answers=WEBHOOK_ANSWERS,
    )


@router.post(
    "/webhooks/github",
    openapi_extra=_github_body(),
)
async def github_webhook(request: Request, ctx: Ctx) -> Response:
    return await _github(request, ctx, None)


@router.post(
    "/webhooks/github/{id}",
    openapi_extra=_github_body(),
)
async def github_webhook_for(id: str, request: Request, ctx: Ctx) -> Response:
    return await _github(request, ctx, id)
