"""The restart context (spec 01 §4.4 step 7): what changed across a restart, told to the agent once.

Snapshot before the restart (previous heartbeat, secret key names — never values), wait for the row to
come back online, then one A2A `message/send` as caller `system:restart-context`. Best effort: a
workspace that does not come back within the wait gets no message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext
from workspace_server.secrets.service import secret_keys
from workspace_server.workspaces import store as ws_store
from workspace_server.workspaces.status import Status

log = logging.getLogger(__name__)

CALLER = "system:restart-context"
ONLINE_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.5
METADATA = {"source": "platform", "kind": "restart_context", "layer": 1, "restart_context": True}


@dataclass(frozen=True)
class RestartSnapshot:
    restart_at: datetime
    previous_session: datetime | None
    env_keys: list[str]


def rfc3339_seconds(ts: datetime) -> str:
    """Go's time.RFC3339 in UTC: whole seconds, `Z`."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(delta: timedelta) -> str:
    """`0s` when ≤ 0, else `XhYm`, `XmYs` or `Xs` (the reference's rounding to whole seconds)."""
    secs = round(delta.total_seconds())
    if secs <= 0:
        return "0s"
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def build_message(snap: RestartSnapshot) -> str:
    lines = ["=== WORKSPACE RESTART CONTEXT ===", f"Restart at: {rfc3339_seconds(snap.restart_at)}"]
    if snap.previous_session is None:
        lines.append("Previous session ended: (no prior session on record)")
    else:
        ago = human_duration(snap.restart_at - snap.previous_session)
        lines.append(f"Previous session ended: {rfc3339_seconds(snap.previous_session)} ({ago} ago)")
    lines.append(f"Env vars now available: {', '.join(snap.env_keys) if snap.env_keys else '(none)'}")
    lines.append("=== END RESTART CONTEXT ===")
    return "\n".join(lines) + "\n"


def build_payload(text: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": new_id(),
        "method": "message/send",
        "params": {
            "message": {
                "messageId": new_id(),
                "role": "user",
                "parts": [{"kind": "text", "text": text}],
                "metadata": dict(METADATA),
            }
        },
    }


async def snapshot(ctx: AppContext, ws_id: str, last_heartbeat_at: datetime | None) -> RestartSnapshot:
    """Taken before the restart, so `previous_session` is the old session's last heartbeat."""
    try:
        keys = await secret_keys(ctx.engine, ws_id)
    except Exception:
        log.warning("restart context: listing secret keys of %s failed", ws_id, exc_info=True)
        keys = []
    return RestartSnapshot(utcnow(), last_heartbeat_at, keys)


async def _wait_online(ctx: AppContext, ws_id: str) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ONLINE_WAIT_SECONDS
    while True:
        try:
            async with ctx.engine.connect() as conn:
                if await ws_store.workspace_status(conn, ws_id) == Status.ONLINE:
                    return True
        except Exception:
            log.warning("restart context: status poll of %s failed", ws_id, exc_info=True)
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)


async def send(ctx: AppContext, ws_id: str, snap: RestartSnapshot) -> bool:
    """Deliver the context once the workspace is online; True when the agent answered."""
    proxy = ctx.a2a.proxy
    if proxy is None:
        log.info("restart context for %s skipped: no A2A proxy installed", ws_id)
        return False
    if not await _wait_online(ctx, ws_id):
        log.info("restart context: %s did not come online within %.0fs; dropped", ws_id, ONLINE_WAIT_SECONDS)
        return False
    body = json.dumps(build_payload(build_message(snap)), separators=(",", ":")).encode()
    try:
        result = await proxy(ws_id, body, CALLER, False)
    except Exception:
        log.warning("restart context delivery to %s failed", ws_id, exc_info=True)
        return False
    status = getattr(result, "status", None)
    log.info("restart context delivered to %s (status=%s, keys=%d)", ws_id, status, len(snap.env_keys))
    return status == 200
