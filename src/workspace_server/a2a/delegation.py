"""Delegation (spec 04 §2): one workspace hands a task to another through the A2A proxy, in the background.

Rows live in `activity_logs` on the source workspace: one `delegate` row per delegation (its status
moves pending → dispatched → queued|completed|failed) and `delegate_result` rows for outcomes, which
the agent runtime polls through `GET /delegations`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.a2a import store
from workspace_server.a2a.call import spawn
from workspace_server.a2a.proxy import Outcome, ProxyResult, proxy_a2a
from workspace_server.a2a.schemas import DelegateRequest, RecordRequest, UpdateRequest
from workspace_server.activity.service import sorted_keys, truncate_bytes
from workspace_server.activity.store import insert_activity
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id, parse_uuid
from workspace_server.common.time import rfc3339
from workspace_server.context import AppContext
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(__name__)

RETRY_DELAY_SECONDS = 8.0
DELEGATION_LIMIT_SECONDS = 30 * 60
LIST_LIMIT = 50
TRACKING_WARNING = "delegation dispatched but status tracking unavailable"


def _target(raw: str) -> str:
    target = parse_uuid(raw.strip().lower()) if raw else None
    if target is None:
        raise ApiError(400, "target_id must be a valid UUID")
    return target


def a2a_message(task: str, delegation_id: str) -> dict[str, Any]:
    """The A2A request a delegation sends; messageId = delegation id, so the queue dedupes retries."""
    return {
        "method": "message/send",
        "params": {
            "message": {
                "role": "user",
                "messageId": delegation_id,
                "parts": [{"type": "text", "text": task}],
                "metadata": {"delegation_id": delegation_id},
            }
        },
    }


# ---- POST /workspaces/:id/delegate ----


async def delegate(ctx: AppContext, source: str, body: DelegateRequest) -> tuple[int, dict[str, Any]]:
    target = _target(body.target_id)
    if target == source:
        raise ApiError(400, "self-delegation not permitted")
    key = body.idempotency_key or ""
    if key:
        hit = await _idempotent_hit(ctx, source, key)
        if hit is not None:
            return 200, hit
    delegation_id = new_id()
    tracked, winner = await _insert_pending(ctx, source, target, body.task, delegation_id, key)
    if winner is not None:
        return 200, winner
    await ctx.events.record(
        "DELEGATION_SENT",
        source,
        sorted_keys(
            {
                "delegation_id": delegation_id,
                "target_id": target,
                "task_preview": truncate_bytes(body.task, 100),
            }
        ),
    )
    payload = json.dumps(a2a_message(body.task, delegation_id), ensure_ascii=False).encode()
    spawn(ctx, _execute(ctx, source, target, delegation_id, payload), f"delegation:{delegation_id}")
    resp: dict[str, Any] = {"delegation_id": delegation_id, "status": "delegated", "target_id": target}
    if not tracked:
        resp["warning"] = TRACKING_WARNING
    return 202, sorted_keys(resp)


def _hit(delegation_id: str, status: str, target: str) -> dict[str, Any]:
    return sorted_keys(
        {"delegation_id": delegation_id, "status": status, "target_id": target, "idempotent_hit": True}
    )


async def _idempotent_hit(ctx: AppContext, source: str, key: str) -> dict[str, Any] | None:
    """The live delegation holding `key`; a failed one is deleted so this retry can take the key."""
    try:
        async with ctx.engine.begin() as conn:
            row = await store.delegation_by_key(conn, source, key)
            if row is None or not row.delegation_id:
                return None
            if row.status == "failed":
                await store.delete_failed_by_key(conn, source, key)
                return None
    except Exception:
        log.exception("delegation: idempotency lookup failed for %s", source)
        return None
    return _hit(row.delegation_id, row.status, row.target_id or "")


async def _insert_delegate_row(
    conn: AsyncConnection,
    source: str,
    target: str,
    task: str,
    delegation_id: str,
    status: str,
    key: str | None = None,
) -> None:
    """The source's `delegate` row: one shape for delegations we send and ones the agent records."""
    await insert_activity(
        conn,
        workspace_id=source,
        activity_type="delegation",
        method="delegate",
        source_id=source,
        target_id=target,
        summary="Delegating to " + target,
        request_body={"task": task, "delegation_id": delegation_id},
        status=status,
        idempotency_key=key,
    )


async def _insert_pending(
    ctx: AppContext, source: str, target: str, task: str, delegation_id: str, key: str
) -> tuple[bool, dict[str, Any] | None]:
    """(tracked, winner): winner is the concurrent request's delegation that took the same key."""
    try:
        async with ctx.engine.begin() as conn:
            await _insert_delegate_row(conn, source, target, task, delegation_id, "pending", key or None)
        return True, None
    except IntegrityError:
        if key:
            async with ctx.engine.connect() as conn:
                row = await store.delegation_by_key(conn, source, key)
            if row is not None and row.delegation_id:
                return False, _hit(row.delegation_id, row.status, target)
        log.exception("delegation: storing %s failed", delegation_id)
    except Exception:
        log.exception("delegation: storing %s failed", delegation_id)
    return False, None


async def _execute(ctx: AppContext, source: str, target: str, delegation_id: str, payload: bytes) -> None:
    try:
        async with asyncio.timeout(DELEGATION_LIMIT_SECONDS):
            await _set_status(ctx, source, delegation_id, "dispatched")
            await _status_event(ctx, source, target, delegation_id, "dispatched")
            result = await proxy_a2a(ctx, target, payload, source, True)
            if is_transient(result):
                log.info("delegation %s: %s — retrying once", delegation_id, result.error_text())
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                result = await proxy_a2a(ctx, target, payload, source, True)
    except TimeoutError:
        await _failed(ctx, source, target, delegation_id, "delegation timed out")
        return
    await _settle(ctx, source, target, delegation_id, result)


def is_transient(result: ProxyResult) -> bool:
    """Retry only what never reached the agent: 502, or 503 with a container restart (never busy)."""
    if result.error is None:
        return False
    if result.status == 502 and result.outcome is Outcome.NOT_DELIVERED:
        return True
    return result.status == 503 and result.error.get("restarting") is True


def reply_error(result: ProxyResult) -> str | None:
    """Why a proxied call failed, or None on success (a JSON-RPC error object is a failure too)."""
    if result.error is not None:
        return result.error_text()
    reply = result.json()
    if isinstance(reply, dict) and "error" in reply and "result" not in reply:
        err = reply["error"]
        text = err.get("message") if isinstance(err, dict) else err
        return str(text) if text else "agent returned a JSON-RPC error"
    return None


def response_text(body: bytes) -> str:
    """First `kind:"text"` part of `result.parts`, else of `result.artifacts[].parts`, else the raw body."""
    raw = body.decode(errors="replace")
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):  # an agent's reply: nesting depth unbounded
        return raw
    result = reply.get("result") if isinstance(reply, dict) else None
    if not isinstance(result, dict):
        return raw
    groups: list[Any] = [result.get("parts")]
    artifacts = result.get("artifacts")
    if isinstance(artifacts, list):
        groups += [a.get("parts") for a in artifacts if isinstance(a, dict)]
    for parts in groups:
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and part.get("kind") == "text" and isinstance(part.get("text"), str):
                return str(part["text"])
    return raw


async def _settle(ctx: AppContext, source: str, target: str, delegation_id: str, result: ProxyResult) -> None:
    if result.outcome is Outcome.QUEUED:
        await _set_status(ctx, source, delegation_id, "queued")
        await _insert_result(
            ctx,
            source,
            target,
            status="queued",
            summary="Delegation queued — target at capacity",
            response_body={"delegation_id": delegation_id, "queued": True},
        )
        await _status_event(ctx, source, target, delegation_id, "queued")
        return
    error = reply_error(result)
    if error is not None:
        await _failed(ctx, source, target, delegation_id, error)
        return
    await _completed(ctx, source, target, delegation_id, response_text(result.body))


async def _completed(
    ctx: AppContext, source: str, target: str, delegation_id: str, text: str, *, via: str | None = None
) -> None:
    summary = f"Delegation completed ({truncate_bytes(text, 80)})"
    body = {"text": text, "delegation_id": delegation_id}
    if via is None or not await _update_result(
        ctx, source, target, delegation_id, "completed", summary, body
    ):
        await _insert_result(ctx, source, target, status="completed", summary=summary, response_body=body)
    await _set_status(ctx, source, delegation_id, "completed")
    payload = {
        "delegation_id": delegation_id,
        "target_id": target,
        "response_preview": truncate_bytes(text, 200),
    }
    if via:
        payload["via"] = via
    await ctx.events.record("DELEGATION_COMPLETE", source, sorted_keys(payload))


async def _failed(
    ctx: AppContext, source: str, target: str, delegation_id: str, error: str, *, via: str | None = None
) -> None:
    await _set_status(ctx, source, delegation_id, "failed", error)
    body = {"delegation_id": delegation_id}
    updated = via is not None and await _update_result(
        ctx, source, target, delegation_id, "failed", "Delegation failed", None, error
    )
    if not updated:
        # request_body carries the id so GET /delegations can correlate the failure (upstream left it out)
        await _insert_result(
            ctx, source, target, status="failed", summary="Delegation failed", request_body=body, error=error
        )
    payload = {"delegation_id": delegation_id, "target_id": target, "error": error}
    if via:
        payload["via"] = via
    await ctx.events.record("DELEGATION_FAILED", source, sorted_keys(payload))


async def finish_from_queue(
    ctx: AppContext,
    source: str,
    target: str,
    delegation_id: str,
    result: ProxyResult | None,
    error: str | None,
) -> None:
    """The queue delivered (or gave up on) a delegation that was answered `queued` earlier."""
    failure = error if result is None else reply_error(result)
    if result is None or failure is not None:
        await _failed(ctx, source, target, delegation_id, failure or "delivery failed", via="queue_drain")
        return
    await _completed(ctx, source, target, delegation_id, response_text(result.body), via="queue_drain")


async def _status_event(ctx: AppContext, source: str, target: str, delegation_id: str, status: str) -> None:
    payload = {"delegation_id": delegation_id, "target_id": target, "status": status}
    await ctx.events.record("DELEGATION_STATUS", source, sorted_keys(payload))


async def _set_status(ctx: AppContext, source: str, delegation_id: str, status: str, error: str = "") -> None:
    try:
        async with ctx.engine.begin() as conn:
            await store.set_delegation_status(conn, source, delegation_id, status, error)
    except Exception:
        log.exception("delegation %s: status update to %s failed", delegation_id, status)


async def _insert_result(
    ctx: AppContext,
    source: str,
    target: str | None,
    *,
    status: str,
    summary: str,
    response_body: Any = None,
    request_body: Any = None,
    error: str | None = None,
) -> None:
    try:
        async with ctx.engine.begin() as conn:
            await insert_activity(
                conn,
                workspace_id=source,
                activity_type="delegation",
                method="delegate_result",
                source_id=source,
                target_id=target,
                summary=summary,
                request_body=request_body,
                response_body=response_body,
                status=status,
                error_detail=error,
            )
    except Exception:
        log.exception("delegation: storing the %s result for %s failed", status, source)


async def _update_result(
    ctx: AppContext,
    source: str,
    target: str,
    delegation_id: str,
    status: str,
    summary: str,
    body: Any,
    error: str | None = None,
) -> bool:
    try:
        async with ctx.engine.begin() as conn:
            n = await store.update_delegate_result(
                conn,
                source,
                target,
                delegation_id,
                status=status,
                summary=summary,
                response_body=body,
                error=error,
            )
    except Exception:
        log.exception("delegation %s: updating the queued result failed", delegation_id)
        return False
    return n > 0


# ---- POST /delegations/record, POST /delegations/:id/update, GET /delegations ----


async def record(ctx: AppContext, source: str, body: RecordRequest) -> dict[str, Any]:
    target = _target(body.target_id)
    try:
        async with ctx.engine.begin() as conn:
            # an admin or org token passes WorkspaceAuth for any id: the row's foreign key needs a real one
            known = parse_uuid(source) is not None and await workspace_exists(conn, source)
            if known:
                await _insert_delegate_row(conn, source, target, body.task, body.delegation_id, "dispatched")
    except Exception:
        log.exception("delegation: record of %s failed", body.delegation_id)
        raise ApiError(500, "failed to record delegation") from None
    if not known:
        raise ApiError(404, "workspace not found")
    payload = {
        "delegation_id": body.delegation_id,
        "target_id": target,
        "task_preview": truncate_bytes(body.task, 100),
    }
    await ctx.events.record("DELEGATION_SENT", source, sorted_keys(payload))
    return sorted_keys({"delegation_id": body.delegation_id, "status": "recorded"})


async def update(ctx: AppContext, source: str, delegation_id: str, body: UpdateRequest) -> dict[str, Any]:
    if body.status not in ("completed", "failed"):
        raise ApiError(400, "status must be 'completed' or 'failed'")
    error = body.error or ""
    await _set_status(ctx, source, delegation_id, body.status, error)
    if body.status == "completed":
        preview = body.response_preview or ""
        await _insert_result(
            ctx,
            source,
            None,
            status="completed",
            summary=f"Delegation completed ({truncate_bytes(preview, 80)})",
            response_body={"text": preview, "delegation_id": delegation_id},
        )
        payload = {"delegation_id": delegation_id, "response_preview": truncate_bytes(preview, 200)}
        await ctx.events.record("DELEGATION_COMPLETE", source, sorted_keys(payload))
    else:
        await ctx.events.record(
            "DELEGATION_FAILED", source, sorted_keys({"delegation_id": delegation_id, "error": error})
        )
    return sorted_keys({"status": body.status, "delegation_id": delegation_id})


async def list_delegations(ctx: AppContext, source: str) -> list[dict[str, Any]]:
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.list_delegations(conn, source, LIST_LIMIT)
    except Exception:
        log.exception("delegation: list failed for %s", source)
        raise ApiError(500, "query failed") from None
    return [_item(r) for r in rows]


def _json_field(value: Any, key: str) -> str:
    found = value.get(key) if isinstance(value, dict) else None
    if found is None or isinstance(found, dict | list):
        return "" if found is None else json.dumps(found, separators=(",", ":"))
    return found if isinstance(found, str) else json.dumps(found)


def _item(row: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": row.id,
        "type": row.activity_type,
        "source_id": row.source_id or "",
        "target_id": row.target_id or "",
        "summary": row.summary or "",
        "status": row.status or "",
        "created_at": rfc3339(row.created_at),
    }
    delegation_id = _json_field(row.request_body, "delegation_id") or _json_field(
        row.response_body, "delegation_id"
    )
    if delegation_id:
        item["delegation_id"] = delegation_id
    if row.error_detail:
        item["error"] = row.error_detail
    body = row.response_body
    if isinstance(body, dict) and body.get("text") is not None:
        preview = _json_field(body, "text")
    elif body is not None:
        preview = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    else:
        preview = ""
    if preview:
        item["response_preview"] = truncate_bytes(preview, 300)
    return sorted_keys(item)
