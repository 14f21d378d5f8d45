"""`POST /webhooks/:type` (spec 06 §3.6 "Webhook receiver"), with the reference's holes closed: every
delivery is verified against the rows it could belong to before anything in it is believed, and matched
to those rows (not only Telegram's `chat_id`).

- slack: `X-Slack-Signature` with the row's `signing_secret` (else `SLACK_SIGNING_SECRET`), timestamp
  within 5 minutes; `url_verification` answered with its challenge (one body);
- telegram: `X-Telegram-Bot-Api-Secret-Token` must equal the row's `webhook_secret` (rows without one
  accept no webhook);
- discord: Ed25519 over timestamp + body with the row's `public_key` (or `app_public_key`), else
  `DISCORD_APP_PUBLIC_KEY`, timestamp within 5 minutes; PING answered `{"type":1}`; a command is
  answered `{"type":5}` (deferred) and the reply follows up on the interaction;
- lark: the row's `verify_token` (constant time) in the event; with an `encrypt_key`, `X-Lark-Signature`
  checked and the body decrypted first.
Failing verification: 401 `invalid signature`. Then the spec's `[slug]` routing among the matching rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from workspace_server.channels.inbound import handle_inbound
from workspace_server.channels.manager import handle_update
from workspace_server.channels.model import Channel, Inbound
from workspace_server.channels.providers import discord, lark, slack, telegram
from workspace_server.channels.rows import enabled_channels
from workspace_server.channels.state import spawn
from workspace_server.common.errors import ApiError
from workspace_server.common.http import parse_json
from workspace_server.context import AppContext

BAD_SIGNATURE = "invalid signature"
PARSE_FAILED = "webhook parse failed"
_SLUG = re.compile(r"^[a-zA-Z0-9 _-]+$")
SEEN_TTL = 3600.0

Answer = tuple[int, dict[str, Any]]


def _json(body: bytes) -> dict[str, Any]:
    data = parse_json(body, PARSE_FAILED)
    if not isinstance(data, dict):
        raise ApiError(400, PARSE_FAILED)
    return data


def split_slug(text: str) -> tuple[str, str]:
    """`[slug] rest` → (slug lower-cased, rest, or the whole text when rest is empty); else ("", text)."""
    if not text.startswith("["):
        return "", text
    end = text.find("]")
    if not 2 <= end <= 39:
        return "", text
    slug = text[1:end].strip().lower()
    if not slug or not _SLUG.match(slug):
        return "", text
    rest = text[end + 1 :].strip()
    return slug, rest or text


def route(candidates: list[Channel], msg: Inbound) -> Channel | Answer:
    slug, msg.text = split_slug(msg.text)
    if not candidates:
        return 200, {"status": "no_channel"}
    if not slug:
        return candidates[0]
    for c in candidates:
        name = c.config.get("username", "").strip().lower()
        if name and (
            name == slug or name.replace(" ", "-").startswith(slug) or name.replace(" ", "").startswith(slug)
        ):
            return c
    available = [f"[{c.config['username']}]" for c in candidates if c.config.get("username")]
    return 200, {"status": "unknown_agent", "requested_slug": slug, "available_slugs": available}


async def _accept(
    ctx: AppContext, candidates: list[Channel], msg: Inbound | None, accepted: dict[str, Any]
) -> Answer:
    if msg is None:
        return 200, {"status": "ignored"}
    picked = route(candidates, msg)
    if isinstance(picked, tuple):
        return picked
    if msg.message_id:  # providers redeliver (Slack retries after 3 s, a mention is two events): once each
        seen = f"channel:{picked.channel_type}:seen:{picked.id}:{msg.chat_id}:{msg.message_id}"[:512]
        if await ctx.kv.get(seen):
            return 200, accepted
        await ctx.kv.set(seen, "1", SEEN_TTL)
    spawn(ctx, handle_inbound(ctx, picked, msg), f"channel-inbound:{picked.id}")
    return 200, accepted


def _in_chats(c: Channel, chat: str) -> bool:
    ids = [x.strip() for x in c.config.get("chat_id", "").split(",") if x.strip()]
    return not ids or chat in ids


async def receive(ctx: AppContext, channel_type: str, body: bytes, headers: Mapping[str, str]) -> Answer:
    rows = await enabled_channels(ctx, channel_type)
    if channel_type == "slack":
        return await _slack(ctx, rows, body, headers)
    if channel_type == "telegram":
        return await _telegram(ctx, rows, body, headers)
    if channel_type == "discord":
        return await _discord(ctx, rows, body, headers)
    return await _lark(ctx, rows, body, headers)


async def _slack(ctx: AppContext, rows: list[Channel], body: bytes, headers: Mapping[str, str]) -> Answer:
    fallback = ctx.settings.SLACK_SIGNING_SECRET
    verified = [r for r in rows if slack.verify(r.config.get("signing_secret") or fallback, body, headers)]
    if not verified and not slack.verify(fallback, body, headers):
        raise ApiError(401, BAD_SIGNATURE)
    data = _json(body)
    if data.get("type") == "url_verification":
        challenge = data.get("challenge")
        return 200, {"challenge": challenge if isinstance(challenge, str) else ""}
    msg = slack.parse(data)
    if msg is None:
        return 200, {"status": "ignored"}
    # a bot-token row answers in its channel; a webhook-only row has no channel of its own to match
    candidates = [r for r in verified if r.config.get("channel_id", "").strip() in ("", msg.chat_id)]
    return await _accept(ctx, candidates, msg, {"status": "accepted"})


async def _telegram(ctx: AppContext, rows: list[Channel], body: bytes, headers: Mapping[str, str]) -> Answer:
    header = headers.get("x-telegram-bot-api-secret-token", "")
    verified = [r for r in rows if telegram.secret_matches(r.config, header)]
    if not verified:
        raise ApiError(401, BAD_SIGNATURE)
    data = _json(body)
    msg = telegram.parse(data)
    if msg is None or telegram.local_command(msg.text):
        # commands, button presses, membership changes: handled as a poller handles them
        chat = telegram.update_chat(data)
        row = next((r for r in verified if _in_chats(r, chat)), None) if chat else None
        if row is None:
            return 200, {"status": "ignored"}
        spawn(ctx, handle_update(ctx, row, data), f"channel-update:{row.id}")
        return 200, {"status": "accepted"}
    candidates = [r for r in verified if _in_chats(r, msg.chat_id)]
    return await _accept(ctx, candidates, msg, {"status": "accepted"})


async def _discord(ctx: AppContext, rows: list[Channel], body: bytes, headers: Mapping[str, str]) -> Answer:
    def key(r: Channel) -> str:
        return r.config.get("public_key") or r.config.get("app_public_key") or ""

    verified = [r for r in rows if key(r) and discord.verify(key(r), body, headers)]
    fallback = ctx.settings.DISCORD_APP_PUBLIC_KEY
    if not verified:
        if not (fallback and discord.verify(fallback, body, headers)):
            raise ApiError(401, BAD_SIGNATURE)
        verified = [r for r in rows if not key(r)]  # rows that rely on the deployment's key
    data = _json(body)
    if data.get("type") == 1:
        return 200, {"type": 1}
    return await _accept(ctx, verified, discord.parse(data), {"type": 5})


async def _lark(ctx: AppContext, rows: list[Channel], body: bytes, headers: Mapping[str, str]) -> Answer:
    data = _json(body)
    candidates = rows
    if "encrypt" in data:
        decrypted: dict[str, Any] | None = None
        candidates = []
        for r in rows:
            ek = r.config.get("encrypt_key", "")
            if not ek or (headers.get("x-lark-signature") and not lark.signature_ok(ek, body, headers)):
                continue
            plain = lark.decrypt(ek, data)
            if plain is not None:
                decrypted = decrypted or plain
                candidates.append(r)
        if decrypted is None:
            raise ApiError(401, BAD_SIGNATURE)
        data = decrypted
    verified = [r for r in candidates if lark.token_ok(r.config, data)]
    if not verified:
        raise ApiError(401, BAD_SIGNATURE)
    if data.get("type") == "url_verification":
        challenge = data.get("challenge")
        return 200, {"challenge": challenge if isinstance(challenge, str) else ""}
    return await _accept(ctx, verified, lark.parse(data), {"status": "accepted"})
