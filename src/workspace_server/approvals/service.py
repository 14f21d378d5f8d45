"""Approval rules (spec 05 §4): create + escalate, decide once, auto-deny after ten minutes.

An agent asks before a risky action (`POST …/approvals`); the request is announced on its workspace
(`APPROVAL_REQUESTED`) and on its parent's (`APPROVAL_ESCALATED`), and a human decides it through the
canvas. Choices where the reference is loose (docs/decisions.md, "KV memory and approvals"):

- a request nobody decided within ten minutes is denied by `auto-expired` whenever any approvals route
  looks at it, not only when `/approvals/pending` happens to be polled, so a stale request can no longer
  be approved late;
- a workspace cannot decide its own request with its own token (self-approval defeats the gate);
- omitted `task_id`/`reason` are stored as `""` (what the reference's lists show), an omitted `context`
  as `{}` (the column default the reference meant; it is never returned).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, StrictStr

from workspace_server.activity.service import sorted_keys
from workspace_server.approvals import store
from workspace_server.authz import Actor as AuthInfo
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonbody import parse_model
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

BAD_BODY = "invalid request body"
EXPIRY = timedelta(minutes=10)
NOT_FOUND = "approval not found or already decided"
DECISIONS = {"approved": "APPROVAL_APPROVED", "denied": "APPROVAL_DENIED"}


class CreateBody(BaseModel):
    action: StrictStr = ""
    task_id: StrictStr | None = None
    reason: StrictStr | None = None
    context: dict[str, Any] | None = None


class DecideBody(BaseModel):
    decision: StrictStr = ""
    decided_by: StrictStr | None = None


def parse_create(data: Any) -> CreateBody:
    """400 `invalid request body` for anything Go's binding refused (`action` is required, non-empty).
    `data` comes from read_json, which already refused what the databases cannot store."""
    body = parse_model(CreateBody, data, BAD_BODY)
    if not body.action:
        raise ApiError(400, BAD_BODY)
    return body


def parse_decide(data: Any) -> DecideBody:
    body = parse_model(DecideBody, data, BAD_BODY)
    if not body.decision:
        raise ApiError(400, BAD_BODY)
    if body.decision not in DECISIONS:
        raise ApiError(400, "decision must be 'approved' or 'denied'")
    return body


def _workspace_item(row: Any) -> dict[str, Any]:
    return sorted_keys(
        {
            "id": row.id,
            "task_id": row.task_id,
            "action": row.action,
            "reason": row.reason,
            "status": row.status,
            "decided_by": row.decided_by,
            "decided_at": rfc3339(row.decided_at),
            "created_at": rfc3339(row.created_at),
        }
    )


def _pending_item(row: Any) -> dict[str, Any]:
    return sorted_keys(
        {
            "id": row.id,
            "workspace_id": row.workspace_id,
            "workspace_name": row.workspace_name,
            "action": row.action,
            "reason": row.reason,
            "status": row.status,
            "created_at": rfc3339(row.created_at),
        }
    )


async def create(ctx: AppContext, raw_id: str, body: CreateBody) -> dict[str, Any]:
    """`POST /workspaces/:id/approvals` → 201 `{"approval_id","status":"pending"}` and the events."""
    ws_id = parse_uuid(raw_id)
    if ws_id is None:
        raise ApiError(404, "workspace not found")
    task_id, reason = body.task_id or "", body.reason or ""
    try:
        async with ctx.engine.begin() as conn:
            ws = await get_workspace(conn, ws_id)
            if ws is None:
                raise ApiError(404, "workspace not found")
            approval_id = await store.insert(
                conn,
                ws_id=ws_id,
                task_id=task_id,
                action=body.action,
                reason=reason,
                context=body.context or {},
                now=utcnow(),
            )
    except ApiError:
        raise
    except Exception:
        log.exception("creating an approval for %s failed", ws_id)
        raise ApiError(500, "failed to create approval") from None
    requested = {"approval_id": approval_id, "action": body.action, "reason": reason, "task_id": task_id}
    await ctx.events.record("APPROVAL_REQUESTED", ws_id, sorted_keys(requested))
    if ws.parent_id is not None:
        escalated = {
            "approval_id": approval_id,
            "from_workspace_id": ws_id,
            "action": body.action,
            "reason": reason,
        }
        await ctx.events.record("APPROVAL_ESCALATED", ws.parent_id, sorted_keys(escalated))
    return sorted_keys({"approval_id": approval_id, "status": "pending"})


async def list_for_workspace(ctx: AppContext, raw_id: str) -> list[dict[str, Any]]:
    """`GET /workspaces/:id/approvals`: the newest 50, stale pending ones shown as auto-expired."""
    ws_id = parse_uuid(raw_id)
    if ws_id is None:
        return []
    now = utcnow()
    try:
        async with ctx.engine.begin() as conn:
            await store.expire_stale(conn, cutoff=now - EXPIRY, now=now, ws_id=ws_id)
            rows = await store.list_for_workspace(conn, ws_id)
    except Exception:
        log.exception("listing approvals of %s failed", ws_id)
        raise ApiError(500, "query failed") from None
    return [_workspace_item(r) for r in rows]


async def list_pending(ctx: AppContext) -> list[dict[str, Any]]:
    """`GET /approvals/pending`: expire the stale ones (no event, as upstream), then the newest 50."""
    now = utcnow()
    try:
        async with ctx.engine.begin() as conn:
            await store.expire_stale(conn, cutoff=now - EXPIRY, now=now)
            rows = await store.list_pending(conn)
    except Exception:
        log.exception("listing pending approvals failed")
        raise ApiError(500, "query failed") from None
    return [_pending_item(r) for r in rows]


async def decide(
    ctx: AppContext, raw_id: str, raw_approval_id: str, body: DecideBody, auth: AuthInfo
) -> dict[str, Any]:
    """`POST /workspaces/:id/approvals/:approvalId/decide` → `{"approval_id","status":<decision>}`."""
    if auth.kind == "workspace_token":  # WorkspaceAuth let it through: it is the requester's own token
        raise ApiError(403, "a workspace cannot decide its own approval requests")
    ws_id, approval_id = parse_uuid(raw_id), parse_uuid(raw_approval_id)
    if ws_id is None or approval_id is None:
        raise ApiError(404, NOT_FOUND)
    decided_by = body.decided_by or "human"
    now = utcnow()
    try:
        async with ctx.engine.begin() as conn:
            await store.expire_stale(conn, cutoff=now - EXPIRY, now=now, ws_id=ws_id)
            found = await store.decide(
                conn,
                approval_id=approval_id,
                ws_id=ws_id,
                decision=body.decision,
                decided_by=decided_by,
                now=now,
            )
    except Exception:
        log.exception("deciding approval %s failed", approval_id)
        raise ApiError(500, "failed to update") from None
    if not found:
        raise ApiError(404, NOT_FOUND)
    payload = {"approval_id": approval_id, "decision": body.decision, "decided_by": decided_by}
    await ctx.events.record(DECISIONS[body.decision], ws_id, sorted_keys(payload))
    return sorted_keys({"status": body.decision, "approval_id": approval_id})
