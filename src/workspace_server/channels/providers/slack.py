"""Slack on `slack_sdk`: `AsyncWebClient.chat_postMessage` (bot token) or `AsyncWebhookClient` (incoming
webhook), both on an aiohttp session whose connector is the egress policy's; inbound Events API
deliveries verified by `slack_sdk.signature.SignatureVerifier` (HMAC v0, 5-minute timestamp window)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from workspace_server.channels.adapters import SLACK_HOOK_PREFIX
from workspace_server.channels.model import Inbound, SendError, chunks, s
from workspace_server.channels.providers import rebase
from workspace_server.config import Settings
from workspace_server.egress.clients import guarded_connector
from workspace_server.egress.policy import policy_for

CHUNK = 3000
TIMEOUT = 10


def session(settings: Settings) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=guarded_connector(policy_for(settings)), trust_env=False)


_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|?\s*$")


def to_mrkdwn(text: str) -> str:
    """Markdown → Slack mrkdwn (spec 06 §3.6): tables fenced, headings bold, rules ten dashes, `~~`→`~`,
    links `<u|t>`, `**`→`*`."""
    out: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            rows = [
                [c.strip() for c in r.strip().strip("|").split("|")]
                for r in table
                if not _TABLE_RULE.match(r)
            ]
            widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(map(len, rows)))]
            out.append("```")
            out.extend("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)
            out.append("```")
            table.clear()

    for line in text.split("\n"):
        if _TABLE_ROW.match(line):
            table.append(line)
            continue
        flush()
        if re.fullmatch(r"\s*([-*_])\s*(\1\s*){2,}", line):
            out.append("-" * 10)
            continue
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            line = f"*{heading.group(1).strip()}*"
        line = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"<\2|\1>", line)
        line = line.replace("**", "*").replace("~~", "~")
        out.append(line)
    flush()
    return "\n".join(out)


async def send(settings: Settings, config: Mapping[str, str], text: str, channel: str = "") -> None:
    token, hook = config.get("bot_token", "").strip(), config.get("webhook_url", "").strip()
    async with session(settings) as http:
        if token:
            client = AsyncWebClient(
                token=token, base_url=settings.SLACK_API_BASE_URL, session=http, timeout=TIMEOUT
            )
            extra: dict[str, Any] = {}
            if config.get("username"):
                extra["username"] = config["username"]
            if config.get("icon_emoji"):
                extra["icon_emoji"] = config["icon_emoji"]
            target = channel or config.get("channel_id", "").strip()
            for piece in chunks(to_mrkdwn(text), CHUNK, ("\n",)):
                block = {"type": "section", "text": {"type": "mrkdwn", "text": piece}}
                try:
                    await client.chat_postMessage(channel=target, text=piece, blocks=[block], **extra)
                except SlackApiError as exc:  # ok:false; the SDK's message names the API error only
                    raise SendError(f"slack: {exc.response.get('error', 'error')}") from None
                except aiohttp.ClientError:
                    raise SendError("slack: request failed") from None
            return
        if not hook:
            raise SendError("slack: no bot_token or webhook_url")
        url = rebase(hook, SLACK_HOOK_PREFIX, settings.SLACK_WEBHOOK_BASE_URL)
        try:
            resp = await AsyncWebhookClient(url, session=http, timeout=TIMEOUT).send(text=text)
        except aiohttp.ClientError:
            raise SendError("slack: webhook request failed") from None
        if resp.status_code != 200:
            raise SendError(f"slack: webhook answered HTTP {resp.status_code}")


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Signature and timestamp freshness (SignatureVerifier rejects a timestamp over 5 minutes off)."""
    ts, sig = headers.get("x-slack-request-timestamp", ""), headers.get("x-slack-signature", "")
    if not secret or not ts.isascii() or not ts.isdigit() or len(ts) > 12 or not sig:  # the SDK int()s it
        return False
    return SignatureVerifier(secret).is_valid(body=body, timestamp=ts, signature=sig)


def parse(data: dict[str, Any]) -> Inbound | None:
    """An Events API `event_callback` carrying a user's message; bot posts and edits are ignored (the
    bot's own replies would otherwise loop back)."""
    if data.get("type") != "event_callback":
        return None
    event = data.get("event")
    if not isinstance(event, dict) or event.get("type") not in ("message", "app_mention"):
        return None
    if event.get("bot_id") or event.get("subtype"):
        return None
    text, channel = s(event.get("text")), s(event.get("channel"))
    if not text or not channel:
        return None
    user = s(event.get("user"))
    # `ts` names the post: a mention arrives as both `message` and `app_mention` with the same one
    return Inbound(channel, user, user, text, s(event.get("ts")))
