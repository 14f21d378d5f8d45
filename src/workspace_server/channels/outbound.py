"""One entry point for posting text to a channel, whichever provider it is."""

from __future__ import annotations

from workspace_server.channels.model import Channel, Inbound, SendError
from workspace_server.channels.providers import discord, lark, slack, telegram
from workspace_server.context import AppContext


async def deliver(ctx: AppContext, channel: Channel, text: str, to: Inbound | None = None) -> None:
    """Post `text` on `channel`: in reply to `to` (its chat, its interaction) or to the configured target.
    Raises SendError."""
    s, cfg = ctx.settings, channel.config
    if channel.channel_type == "slack":
        await slack.send(s, cfg, text, to.chat_id if to and cfg.get("bot_token") else "")
    elif channel.channel_type == "telegram":
        await telegram.send(s, cfg, text, to.chat_id if to else "")
    elif channel.channel_type == "discord":
        if to is None or not await discord.follow_up(s, ctx.http, to, text):
            await discord.send(s, ctx.http, cfg, text)
    elif channel.channel_type == "lark":
        await lark.send(s, ctx.http, cfg, text)
    else:
        raise SendError("unsupported channel type")
