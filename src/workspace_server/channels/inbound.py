"""A provider's message → an A2A `message/send` to the workspace → the reply posted back (spec 06 §3.6
"Inbound"). Shared by the webhook receiver and the Telegram pollers.

Sent through the A2A proxy as the system caller `channel:<type>` (no hierarchy; budget, queueing and the
`a2a_receive` activity row as for any call). The short history (≤ 10 exchanges, 24 h) lives in the KV
store under `channel:<type>:<chat_id>:history`, newest first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from workspace_server.a2a.proxy import proxy_a2a
from workspace_server.channels import store
from workspace_server.channels.model import MAX_INBOUND_TEXT, Channel, Inbound, SendError
from workspace_server.channels.outbound import deliver
from workspace_server.channels.providers import telegram
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext

log = logging.getLogger(__name__)

HISTORY_MAX = 10
HISTORY_TTL = 24 * 3600.0
A2A_TIMEOUT = 300
MAX_REPLY = 64_000  # characters of an agent's reply posted back


def history_key(channel_type: str, chat_id: str) -> str:
    return f"channel:{channel_type}:{chat_id}:history"


async def load_history(ctx: AppContext, key: str) -> list[dict[str, Any]]:
    raw = await ctx.kv.get(key)
    try:
        items = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [i for i in items if isinstance(i, dict)][:HISTORY_MAX] if isinstance(items, list) else []


def allowed(channel: Channel, msg: Inbound) -> bool:
    """A non-empty allowed-users list must name the sender or the chat."""
    return (
        not channel.allowed_users
        or msg.user_id in channel.allowed_users
        or msg.chat_id in channel.allowed_users
    )


def a2a_body(channel: Channel, msg: Inbound, history: list[dict[str, Any]]) -> bytes:
    message = {
        "role": "user",
        "messageId": f"channel-{channel.channel_type}-{msg.message_id}"[:200],
        "parts": [{"kind": "text", "text": msg.text[:MAX_INBOUND_TEXT]}],
    }
    metadata = {
        "source": channel.channel_type,
        "channel_id": channel.id,
        "chat_id": msg.chat_id,
        "user_id": msg.user_id,
        "username": msg.username,
        "message_id": msg.message_id,
        "history": history,
        "extra": {k: v for k, v in msg.extra.items() if k != "interaction_token"},  # a credential
    }
    return json.dumps(
        {"method": "message/send", "params": {"message": message, "metadata": metadata}}
    ).encode()


def reply_text(status: int, payload: Any) -> str | None:
    """Non-2xx → `Error: agent returned HTTP <code>`; else the first text part of the result, else of
    its artifacts, else nothing."""
    if not 200 <= status < 300:
        return f"Error: agent returned HTTP {status}"
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, dict):
        return None
    for part in result.get("parts") or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
            return str(part["text"])[:MAX_REPLY]
    for artifact in result.get("artifacts") or []:
        for part in (artifact.get("parts") or []) if isinstance(artifact, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                return str(part["text"])[:MAX_REPLY]
    return None


async def handle_inbound(ctx: AppContext, channel: Channel, msg: Inbound) -> str | None:
    """Run one inbound message to the end; returns the reply posted (None: dropped or nothing to say).
    Never raises: it runs detached from any request."""
    try:
        return await _handle(ctx, channel, msg)
    except Exception:
        log.exception("channel %s: inbound message failed", channel.id)
        return None


async def _handle(ctx: AppContext, channel: Channel, msg: Inbound) -> str | None:
    if not allowed(channel, msg):
        return None
    if not await store.claim_message(ctx.engine, channel.id, utcnow()):
        log.warning("channel %s: budget spent, inbound message dropped", channel.id)
        return None
    key = history_key(channel.channel_type, msg.chat_id)
    history = await load_history(ctx, key)
    caller = f"channel:{channel.channel_type}"
    typing = None
    if channel.channel_type == "telegram":
        token = channel.config.get("bot_token", "")
        typing = ctx.tasks.spawn(
            f"telegram-typing:{channel.id}",
            telegram.keep_typing(ctx.settings, token, msg.chat_id),
            awaited=True,
        )
    try:
        result = await proxy_a2a(
            ctx,
            channel.workspace_id,
            a2a_body(channel, msg, history),
            caller,
            True,
            timeout_seconds=A2A_TIMEOUT,
        )
    finally:
        if typing is not None:
            typing.cancel()
            await asyncio.gather(typing, return_exceptions=True)
    if result.error is not None and not result.body:
        # the proxy answered for the agent (offline, refused, unreachable): nothing sent or kept. An agent's
        # own non-2xx reply has its body, and is reported to the chat.
        log.info("channel %s: A2A not delivered (HTTP %d)", channel.id, result.status)
        return None
    reply = reply_text(result.status, result.json())
    if reply:
        try:
            await deliver(ctx, channel, reply, msg)
        except SendError as exc:
            log.warning("channel %s: reply not delivered: %s", channel.id, exc)
    entry = {
        "user": msg.username,
        "message": msg.text[:2000],
        "reply": (reply or "")[:2000],
        "time": rfc3339(utcnow()),
    }
    await ctx.kv.set(key, json.dumps([entry, *history][:HISTORY_MAX]), HISTORY_TTL)
    await ctx.events.broadcast(
        "CHANNEL_MESSAGE",
        channel.workspace_id,
        {
            "channel_id": channel.id,
            "channel_type": channel.channel_type,
            "username": msg.username,
            "direction": "inbound",
        },
    )
    return reply
