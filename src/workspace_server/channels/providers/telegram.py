"""Telegram on `python-telegram-bot`: a `Bot` whose base URL is `TELEGRAM_API_BASE_URL` and whose httpx
transport is the egress policy's. Sends in 4096-character chunks (paragraph > line > space), Markdown then
plain on a parse error, one retry after a 429's `retry_after`. Parsing of updates (webhook or polling) is
here; the pollers are `channels/manager.py`'s."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from telegram import Bot, BotCommand
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from workspace_server.channels.adapters import chat_ids
from workspace_server.channels.model import Inbound, SendError, chunks, obj, s
from workspace_server.config import Settings
from workspace_server.egress.clients import GuardedTransport
from workspace_server.egress.policy import policy_for

log = logging.getLogger(__name__)

CHUNK = 4096
MAX_RETRY_AFTER = 60.0
COMMANDS = (
    ("start", "Show this chat's id"),
    ("help", "How to talk to the agent"),
    ("reset", "Forget the conversation"),
    ("cancel", "Cancel"),
)
POLL_UPDATES = ["message", "channel_post", "my_chat_member", "callback_query"]


def make_bot(settings: Settings, token: str, poll_timeout: float = 0) -> Bot:
    def request(read_timeout: float) -> HTTPXRequest:
        transport = GuardedTransport(policy_for(settings))
        return HTTPXRequest(read_timeout=read_timeout, httpx_kwargs={"transport": transport})

    return Bot(
        token,
        base_url=settings.TELEGRAM_API_BASE_URL,
        request=request(10.0),
        get_updates_request=request(poll_timeout + 10.0),
    )


def retry_seconds(exc: RetryAfter) -> float:
    ra: Any = exc.retry_after
    seconds = ra.total_seconds() if isinstance(ra, timedelta) else float(ra)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


async def send_text(bot: Bot, chat_id: str, text: str) -> None:
    for piece in chunks(text, CHUNK):
        for attempt in (0, 1):
            try:
                try:
                    await bot.send_message(chat_id, piece, parse_mode=ParseMode.MARKDOWN)
                except BadRequest:  # Markdown the agent wrote that Telegram cannot parse: send it plain
                    await bot.send_message(chat_id, piece)
                break
            except RetryAfter as exc:
                if attempt:
                    raise
                await asyncio.sleep(retry_seconds(exc))


async def send(settings: Settings, config: Mapping[str, str], text: str, chat: str = "") -> None:
    """To `chat`, else to every listed chat id; any chat failing is a failed send (the reference answered
    200 while chats failed)."""
    targets = [chat] if chat else chat_ids(dict(config))
    if not targets:
        raise SendError("telegram: no chat_id")
    bot = make_bot(settings, config.get("bot_token", "").strip())
    failed = 0
    try:
        async with bot:
            for target in targets:
                try:
                    await send_text(bot, target, text)
                except TelegramError as exc:
                    failed += 1
                    log.warning("telegram send to a chat failed: %s", type(exc).__name__)
    except TelegramError as exc:  # initialize (getMe): a bad token
        raise SendError(f"telegram: {type(exc).__name__}") from None
    if failed:
        raise SendError(f"telegram: {failed} of {len(targets)} chats failed")


def secret_matches(config: Mapping[str, str], header: str) -> bool:
    """`X-Telegram-Bot-Api-Secret-Token` against the row's `webhook_secret`; a row without one accepts no
    webhook (the reference accepted forged posts for it)."""
    secret = config.get("webhook_secret", "")
    return bool(secret) and hmac.compare_digest(secret.encode(), header.encode(errors="replace"))


def parse(update: dict[str, Any]) -> Inbound | None:
    """A text message or channel post; other updates are the poller's (callbacks, membership)."""
    msg = update.get("message") or update.get("channel_post")
    if not isinstance(msg, dict):
        return None
    chat = obj(msg, "chat")
    sender = obj(msg, "from")
    text = s(msg.get("text"))
    if not text or not s(chat.get("id")):
        return None
    name = s(sender.get("username")) or s(sender.get("first_name")) or s(chat.get("title"))
    return Inbound(s(chat.get("id")), s(sender.get("id")), name, text, s(msg.get("message_id")))


def update_chat(update: dict[str, Any]) -> str:
    """The chat an update belongs to (message, channel post, membership change or button press)."""
    for key in ("message", "channel_post", "my_chat_member"):
        chat = obj(obj(update, key), "chat")
        if chat:
            return s(chat.get("id"))
    return s(obj(obj(obj(update, "callback_query"), "message"), "chat").get("id"))


def local_command(text: str) -> str | None:
    """`/start`, `/help`, `/reset`, `/cancel` (an `@bot` suffix stripped) are answered without the agent."""
    if not text.startswith("/"):
        return None
    cmd = text.split()[0][1:].split("@", 1)[0].lower()
    return cmd if cmd in ("start", "help", "reset", "cancel") else None


async def discover(settings: Settings, token: str) -> dict[str, Any]:
    """`POST /channels/discover`: the bot's name and the chats that wrote to it (answering `/start`)."""
    bot = make_bot(settings, token, 5)
    chats: dict[str, dict[str, str]] = {}
    async with bot:
        me = await bot.get_me()
        await bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS])
        await bot.delete_webhook(drop_pending_updates=False)
        updates = await bot.get_updates(offset=0, limit=100, timeout=5, allowed_updates=POLL_UPDATES[:3])
        for u in updates:
            data = u.to_dict()
            msg = data.get("message") or data.get("channel_post") or data.get("my_chat_member") or {}
            chat = obj(msg, "chat")
            cid = s(chat.get("id"))
            if not cid:
                continue
            name = s(chat.get("title")) or s(chat.get("username")) or s(chat.get("first_name"))
            chats.setdefault(cid, {"chat_id": cid, "name": name, "type": s(chat.get("type"))})
            if local_command(s(msg.get("text"))) == "start":
                await bot.send_message(cid, f"This chat's id is {cid}")
    can_read = bool(me.can_read_all_group_messages)
    return {
        "bot_username": me.username or "",
        "chats": list(chats.values()),
        "can_read_all_group_messages": can_read,
        "privacy_warning": ""
        if can_read
        else "Privacy mode is on: in groups the bot sees only commands "
        "and replies. Disable it with @BotFather /setprivacy, or make the bot an admin.",
        "hint": "Send /start to the bot (or add it to a group), then detect again." if not chats else "",
    }


TYPING_EVERY = 4.0


async def keep_typing(settings: Settings, token: str, chat_id: str) -> None:
    """ "typing…" in the chat every 4 s while the agent works (cancelled when it answers)."""
    try:
        async with make_bot(settings, token) as bot:
            while True:
                await bot.send_chat_action(chat_id, ChatAction.TYPING)
                await asyncio.sleep(TYPING_EVERY)
    except TelegramError as exc:  # cosmetic: never fails the message
        log.debug("telegram typing action failed: %s", type(exc).__name__)
