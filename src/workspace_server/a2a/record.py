"""What the A2A proxy records after a call (spec 04 §1.8): the `a2a_receive` activity row after a reply or
a failure (with the tool trace), A2A_RESPONSE for the canvas and the caller's outbound stamp, handed to
the log writer (journaled before the call is answered, stored in batches); and the token usage an agent
reports (spec 01 §3, in the background), with the per-day read the metrics route serves.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from workspace_server.a2a import schemas as msg
from workspace_server.a2a import store
from workspace_server.a2a.call import LOGGER, Call, agent_json, spawn
from workspace_server.a2a.logwriter import writer
from workspace_server.common.errors import ApiError
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(LOGGER)


def log_reply(call: Call, status: int, body: bytes, duration_ms: int) -> None:
    """Queue the row of the agent's reply (`body` may be b"" when reading it failed), and for the canvas
    the A2A_RESPONSE, which is broadcast once the row is stored."""
    reply = agent_json(body)
    row = _row(
        call,
        summary=f"{call.method} → {call.target_name}",
        response_body=reply,
        tool_trace=_tool_trace(reply),
        duration_ms=duration_ms,
        status="ok" if status < 400 else "error",
    )
    stamp = call.caller if call.is_workspace_caller and status < 400 else None
    event = None
    if not call.caller and status < 400:
        # keys in sorted order as written (Go marshals a map sorted)
        payload = {"duration_ms": duration_ms, "method": call.method, "response_body": reply}
        event = ("A2A_RESPONSE", call.target, payload)
    # the JSON columns' text as it is already at hand (what was sent, what came back), so neither the
    # journal nor the database write encodes those documents again
    raw = {"request_body": call.encoded} if call.encoded else {}
    if isinstance(reply, dict | list) and body[:1] in (b"{", b"["):  # UTF-8 JSON text, as it came
        raw["response_body"] = body
    writer(call.ctx).add(row, outbound_caller=stamp, event=event, raw=raw)


def log_failure(call: Call, error: str, duration_ms: int) -> None:
    """Queue the row of a call that got no reply."""
    row = _row(
        call,
        summary=f"A2A request to {call.target_name} failed: {error}",
        duration_ms=duration_ms,
        status="error",
        error_detail=error,
    )
    writer(call.ctx).add(row)


def count_usage(call: Call, body: bytes) -> None:
    """Add the token usage a reply reports to the target's day, in the background."""
    spawn(call.ctx, record_usage(call.ctx, call.target, body), f"a2a-usage:{call.target}")


def _tool_trace(reply: Any) -> Any:
    result = reply.get("result") if isinstance(reply, dict) else None
    meta = result.get("metadata") if isinstance(result, dict) else None
    return meta.get("tool_trace") if isinstance(meta, dict) else None


def _row(call: Call, **values: Any) -> dict[str, Any]:
    """An `a2a_receive` row on the target (every key present: rows are inserted together)."""
    return {
        "workspace_id": call.target,
        "activity_type": "a2a_receive",
        "source_id": call.caller or None,
        "target_id": call.target,
        "method": call.method,
        "summary": None,
        "request_body": call.request,
        "response_body": None,
        "tool_trace": None,
        "duration_ms": None,
        "status": "ok",
        "error_detail": None,
        **values,
    }


# ---- token usage (spec 01 §3) ----

MAX_TOKENS = 10_000_000
INPUT_COST, OUTPUT_COST = 3e-6, 15e-6  # USD per token


def parse_usage(body: bytes) -> tuple[int, int]:
    """`result.usage`, else top-level `usage`: (input_tokens, output_tokens); (0, 0) when absent."""
    top = agent_json(body)  # None (empty or not JSON) is no dict
    if not isinstance(top, dict):
        return 0, 0
    for holder in (top.get("result"), top):
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if isinstance(usage, dict):
            inp, out = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
            if inp or out:
                return inp, out
    return 0, 0


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return min(max(int(value), 0), MAX_TOKENS)


def usage_period(now: datetime) -> datetime:
    """Token usage is kept per UTC day: the day's 00:00Z."""
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


async def record_usage(ctx: AppContext, ws_id: str, body: bytes) -> None:
    inp, out = parse_usage(body)
    if not inp and not out:
        return
    period = usage_period(utcnow())
    cost = inp * INPUT_COST + out * OUTPUT_COST
    async with ctx.engine.begin() as conn:
        await store.upsert_token_usage(conn, ws_id, period, inp, out, cost)


async def usage_today(ctx: AppContext, ws_id: str) -> dict[str, Any]:
    """GET /workspaces/:id/metrics (spec 01, spec 05 §9): today's UTC token usage of `ws_id`."""
    start = usage_period(utcnow())
    try:
        async with ctx.engine.connect() as conn:
            if not await workspace_exists(conn, ws_id, include_removed=False):
                raise ApiError(404, msg.NOT_FOUND)
            row = await store.token_usage(conn, ws_id, start)
    except ApiError:
        raise
    except Exception:
        log.exception("a2a: reading token usage of %s failed", ws_id)
        raise ApiError(500, "failed to query metrics") from None
    return {
        "input_tokens": int(row.input_tokens) if row else 0,
        "output_tokens": int(row.output_tokens) if row else 0,
        "total_calls": int(row.call_count) if row else 0,
        "estimated_cost_usd": f"{float(row.estimated_cost_usd) if row else 0.0:.6f}",
        "period_start": rfc3339(start),
        "period_end": rfc3339(start + timedelta(days=1)),
    }
