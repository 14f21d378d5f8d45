"""What the scheduler asks of the channels (spec 06 §3.6 "Scheduler hooks"):

- `channel_context`: the last 10 messages of the workspace's enabled Slack channels (bot-token ones),
  prepended to a cron prompt so the agent knows what the team said;
- `broadcast`: a cron run's reply, cut to 500 characters, posted on the workspace's enabled Slack
  channels (the budget holds; failures are logged, never the run's).
Both are best-effort: a provider or database failure never fails the cron run.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from workspace_server.channels import store
from workspace_server.channels.model import Channel, SendError
from workspace_server.channels.outbound import deliver
from workspace_server.channels.providers import slack
from workspace_server.channels.rows import to_channel
from workspace_server.common.time import utcnow
from workspace_server.context import AppContext

log = logging.getLogger(__name__)

BROADCAST_CHARS = 500
CONTEXT_MESSAGES = 10
CONTEXT_FETCH = 20
CONTEXT_TEXT_BYTES = 200
CONTEXT_HEADER = "[Slack channel context — recent team messages]"


async def _slack_channels(ctx: AppContext, ws_id: str) -> list[Channel]:
    rows = await store.list_for_workspace(ctx.engine, ws_id)
    found = (to_channel(ctx.settings, r) for r in rows if r.enabled and r.channel_type == "slack")
    return [c for c in found if c is not None]


def _cut_bytes(text: str, limit: int) -> str:
    raw = text.encode()
    return text if len(raw) <= limit else raw[:limit].decode(errors="ignore")


async def channel_context(ctx: AppContext, ws_id: str) -> str:
    """The rendered context, or "" (no Slack channel with a bot token, nothing said, or a failure)."""
    try:
        channels = await _slack_channels(ctx, ws_id)
    except Exception:
        log.warning("channel context: channels of %s not read", ws_id, exc_info=True)
        return ""
    lines: list[str] = []
    for c in channels:
        token, channel_id = c.config.get("bot_token", ""), c.config.get("channel_id", "")
        if not token or not channel_id:
            continue
        try:
            async with slack.session(ctx.settings) as http:
                client = AsyncWebClient(token=token, base_url=ctx.settings.SLACK_API_BASE_URL, session=http)
                resp = await client.conversations_history(channel=channel_id, limit=CONTEXT_FETCH)
        except (SlackApiError, OSError, TimeoutError) as exc:
            log.info("channel context: slack history of channel %s not read (%s)", c.id, type(exc).__name__)
            continue
        messages: list[Any] = resp.get("messages") or []
        kept = [
            m for m in messages if isinstance(m, dict) and not (m.get("bot_id") and not m.get("username"))
        ]
        for m in reversed(kept[:CONTEXT_MESSAGES]):  # Slack answers newest first
            name = str(m.get("username") or m.get("user") or "someone")
            lines.append(f"- {name}: {_cut_bytes(str(m.get('text') or ''), CONTEXT_TEXT_BYTES)}")
    return "\n".join([CONTEXT_HEADER, *lines]) if lines else ""


async def broadcast(ctx: AppContext, ws_id: str, text: str) -> int:
    """Post `text` (cut to 500 characters) on the workspace's enabled Slack channels; how many took it."""
    if len(text) > BROADCAST_CHARS:
        text = text[: BROADCAST_CHARS - 3] + "..."
    posted = 0
    try:
        channels = await _slack_channels(ctx, ws_id)
    except Exception:
        log.warning("channel broadcast: channels of %s not read", ws_id, exc_info=True)
        return 0
    for c in channels:
        if not await store.claim_message(ctx.engine, c.id, utcnow()):
            continue  # its budget is spent
        try:
            await deliver(ctx, c, text)
            posted += 1
        except SendError as exc:
            await store.release_message(ctx.engine, c.id)
            log.info("channel broadcast on %s failed: %s", c.id, exc)
            continue
        await ctx.events.broadcast(
            "CHANNEL_MESSAGE",
            ws_id,
            {"channel_id": c.id, "channel_type": c.channel_type, "username": "", "direction": "outbound"},
        )
    return posted
