"""What every stage of the A2A proxy pipeline shares: one call's state (`Call`), its answer (`ProxyResult`,
`Outcome`) and the background work it starts (`spawn`, `restart`).

The bottom of the pipeline (proxy → forward → record/pool/caches → call): it imports none of the others,
so each stage can name the call it works on without an import cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from workspace_server.a2a import schemas as msg
from workspace_server.a2a.store import TargetRow
from workspace_server.activity.service import sorted_keys
from workspace_server.common.jsonnum import dumps_compact, loads_reply
from workspace_server.context import AppContext

# One logger for the whole pipeline, under the name it had as one module, so log settings keep applying.
LOGGER = "workspace_server.a2a.proxy"
log = logging.getLogger(LOGGER)

EXTERNAL = "external"  # the runtime of a workspace whose agent runs elsewhere (no instance of ours)
TASKS_GROUP = "a2a"  # the supervisor group of the proxy's background work


class Outcome(StrEnum):
    DELIVERED = "delivered"  # the agent answered (any HTTP status)
    NOT_DELIVERED = "not_delivered"  # refused before it reached the agent: safe to send again
    UNKNOWN = "unknown"  # sent, never answered: never resent
    QUEUED = "queued"  # busy target; the queue delivers it later
    BUSY = "busy"  # busy target; nothing queued


@dataclass
class ProxyResult:
    """`error` set: the client gets `error` as JSON; otherwise `body` verbatim (the agent's bytes)."""

    status: int
    body: bytes = b""
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    outcome: Outcome = Outcome.DELIVERED
    method: str = ""

    def json(self) -> Any:
        return agent_json(self.body)

    def error_text(self) -> str:
        text = (self.error or {}).get("error")
        if isinstance(text, str) and text:
            return text
        return status_phrase(self.status, "unknown error")


@dataclass
class Call:
    ctx: AppContext
    target: str
    caller: str
    log: bool
    ceiling: float | None
    from_queue: bool
    method: str = ""
    row: TargetRow | None = None  # None when missing or unreadable
    row_error: bool = False
    request: Any = None  # the normalised envelope (dict)
    encoded: bytes = b""  # the envelope as sent to the agent (JSON), kept so it is not encoded again

    @property
    def is_workspace_caller(self) -> bool:
        return bool(self.caller) and not msg.is_system_caller(self.caller)

    @property
    def target_name(self) -> str:
        return str(self.row.name) if self.row is not None and self.row.name else self.target


def encode(obj: Any) -> bytes:
    return dumps_compact(obj)


def fail(
    status: int, body: dict[str, Any], outcome: Outcome, headers: dict[str, str] | None = None
) -> ProxyResult:
    return ProxyResult(status, error=sorted_keys(body), headers=headers or {}, outcome=outcome)


def agent_json(body: bytes) -> Any:
    """An agent's reply as JSON, None when empty or not JSON (the reply is the agent's, not ours to judge)."""
    try:
        return loads_reply(body) if body else None
    except (ValueError, RecursionError):  # an agent's reply: nesting depth unbounded
        return None


def status_phrase(status: int, default: str) -> str:
    """The reason phrase of `status`; `default` for a code HTTP does not name (agents send any)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return default


def message_id(payload: Any) -> str:
    """`params.message.messageId` of a request, "" when absent: the queue's idempotency key."""
    if not isinstance(payload, dict):
        return ""
    params = payload.get("params")
    message = params.get("message") if isinstance(params, dict) else None
    mid = message.get("messageId") if isinstance(message, dict) else None
    return mid if isinstance(mid, str) else ""


# ---- background work: on the app's task supervisor (common/tasks.py), drained at shutdown ----


def spawn(ctx: AppContext, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Fire-and-forget: nobody awaits these, the supervisor logs a crash once with the task's name."""
    return ctx.tasks.spawn(name, coro, group=TASKS_GROUP)


def restart(ctx: AppContext, ws_id: str, why: str) -> None:
    """Ask the restart hook to (re)start `ws_id` in the background: a hibernated target woken by a call
    (proxy), or one whose instance is gone (forward)."""
    hook = ctx.restart_hook
    if hook is None:
        log.warning("a2a: %s of %s wanted but no restart hook is installed", why, ws_id)
        return

    async def run() -> None:
        await hook(ws_id)

    spawn(ctx, run(), f"a2a-{why}:{ws_id}")
