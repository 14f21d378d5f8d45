"""`POST /webhooks/github[/:id]` (spec 06 §3.7): GitHub events that wake schedules or reach an agent.

Authenticated by the `X-Hub-Signature-256` HMAC of the raw body with `GITHUB_WEBHOOK_SECRET` (no secret:
503, the route is off). Then, by `X-GitHub-Event`:
- `issues`/`opened` makes every enabled schedule whose name contains `pick-up-work` due now;
  `pull_request_review`/`submitted` those named like `pr review` or `security review`;
- a new issue or review comment, or a failed workflow run, is sent to the workspace (`:id`, else the
  payload's top-level `workspace_id`) as an A2A `message/send` from the system caller `webhook:github`
  (no hierarchy check; budget, queueing and the activity row as for any call);
- anything else is 202 `ignored`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from workspace_server.a2a.proxy import ProxyResult, proxy_a2a
from workspace_server.common.errors import ApiError
from workspace_server.common.http import parse_json
from workspace_server.common.ids import uuid_or_raw
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.db.schema import workspace_schedules

log = logging.getLogger(__name__)

CALLER = "webhook:github"
MAX_BODY_BYTES = 1 << 20
IGNORED = {"status": "ignored", "reason": "unsupported event type"}
# (event, action) → lower-cased substrings of the schedule names it makes due
TRIGGERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("issues", "opened"): ("pick-up-work",),
    ("pull_request_review", "submitted"): ("pr review", "security review"),
}
QUIET_CONCLUSIONS = ("success", "skipped", "neutral")


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """`sha256=<hex HMAC-SHA256 of the body>`, compared in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode(errors="replace"))


def parse_payload(body: bytes) -> dict[str, Any]:
    data = parse_json(body, "invalid JSON payload")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid JSON payload")
    return data


async def trigger_schedules(ctx: AppContext, fragments: tuple[str, ...], now: datetime) -> int:
    """Make matching enabled schedules (of every workspace) due now; returns how many."""
    s = workspace_schedules
    name = sa.func.lower(s.c.name)
    matches = sa.or_(*(name.contains(f, autoescape=True) for f in fragments))
    q = sa.update(s).where(s.c.enabled.is_(True), s.c.next_run_at.is_not(None), matches)
    try:
        async with ctx.engine.begin() as conn:
            return int((await conn.execute(q.values(next_run_at=now))).rowcount)
    except Exception:
        log.exception("github webhook: triggering schedules failed")
        raise ApiError(500, "failed to trigger schedules") from None


# ---- events forwarded to an agent ----


def _get(data: Any, *path: str) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _base_metadata(event: str, action: str, delivery: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": "github",
        "event": event,
        "action": action,
        "delivery_id": delivery,
        "repository": _text(_get(data, "repository", "full_name")),
        "sender": _text(_get(data, "sender", "login")),
    }


def _issue_comment(meta: dict[str, Any], data: dict[str, Any]) -> str:
    meta["issue_number"] = _get(data, "issue", "number")
    meta["comment_url"] = _text(_get(data, "comment", "html_url"))
    title = _text(_get(data, "issue", "title"))
    return (
        f"GitHub comment on {meta['repository']}#{meta['issue_number']} ({title}) by {meta['sender']}:\n\n"
        f"{_text(_get(data, 'comment', 'body'))}\n\n{meta['comment_url']}"
    )


def _review_comment(meta: dict[str, Any], data: dict[str, Any]) -> str:
    meta["pull_request_num"] = _get(data, "pull_request", "number")
    meta["comment_url"] = _text(_get(data, "comment", "html_url"))
    path = _text(_get(data, "comment", "path"))
    return (
        f"GitHub review comment on {meta['repository']} PR #{meta['pull_request_num']}"
        f"{f' ({path})' if path else ''} by {meta['sender']}:\n\n"
        f"{_text(_get(data, 'comment', 'body'))}\n\n{meta['comment_url']}"
    )


def _workflow_run(meta: dict[str, Any], data: dict[str, Any]) -> str:
    run = _get(data, "workflow_run") or {}
    meta.update(
        workflow_name=_text(run.get("name")),
        run_id=run.get("id"),
        run_number=run.get("run_number"),
        conclusion=_text(run.get("conclusion")),
        head_branch=_text(run.get("head_branch")),
        head_sha=_text(run.get("head_sha")),
        run_url=_text(run.get("html_url")),
        trigger_event=_text(run.get("event")),
    )
    return (
        f"CI failure: workflow {meta['workflow_name']} run #{meta['run_number']} concluded "
        f"{meta['conclusion']} on {meta['head_branch']}@{meta['head_sha'][:7]} "
        f"(triggered by {meta['trigger_event']}) in {meta['repository']}.\n{meta['run_url']}"
    )


def _forwarded(
    event: str, action: str, data: dict[str, Any]
) -> Callable[[dict[str, Any], dict[str, Any]], str] | None:
    """The message builder for an event this route forwards, else None."""
    if event == "issue_comment" and action == "created":
        return _issue_comment
    if event == "pull_request_review_comment" and action == "created":
        return _review_comment
    conclusion = _get(data, "workflow_run", "conclusion")
    if event == "workflow_run" and action == "completed" and conclusion not in QUIET_CONCLUSIONS:
        return _workflow_run
    return None


def message_body(text: str, metadata: dict[str, Any]) -> bytes:
    message = {"role": "user", "parts": [{"kind": "text", "text": text}], "metadata": metadata}
    return json.dumps({"method": "message/send", "params": {"message": message}}).encode()


def target_workspace(path_id: str | None, data: dict[str, Any]) -> str:
    raw = path_id or data.get("workspace_id")
    if not isinstance(raw, str) or not raw:
        raise ApiError(400, "missing workspace id")
    return uuid_or_raw(raw)


async def handle(
    ctx: AppContext, event: str, delivery: str, body: bytes, path_id: str | None
) -> tuple[int, dict[str, Any]] | ProxyResult:
    """(status, JSON body) for what the route answers itself, or the proxied agent's result."""
    data = parse_payload(body)
    action = _text(data.get("action"))
    fragments = TRIGGERS.get((event, action))
    if fragments is not None:
        affected = await trigger_schedules(ctx, fragments, utcnow())
        return 200, {"status": "triggered", "event": event, "action": action, "schedules_affected": affected}
    build = _forwarded(event, action, data)
    if build is None:
        return 202, dict(IGNORED)
    target = target_workspace(path_id, data)
    metadata = _base_metadata(event, action, delivery, data)
    text = build(metadata, data)
    return await proxy_a2a(ctx, target, message_body(text, metadata), CALLER, True)
