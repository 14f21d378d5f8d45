"""Telegram long polling (spec 06 §3.6 "Manager"): one supervised poller per enabled Telegram channel,
on the leader only.

`manager_loop` is a background loop (loops/supervisor.py spawns it): while this replica holds the
sweepers' lease it reconciles the pollers with the enabled rows — at start, whenever a route asks
(`state.reload`: create, update, delete) and every few seconds — and while it does not, it runs none.
Rows with a `webhook_secret` are webhook-driven and not polled. Each poller runs under `supervise`
(restarted with back-off on a crash); a bad token (401) ends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from telegram import Bot
from telegram.error import Forbidden, InvalidToken, RetryAfter, TelegramError

from workspace_server.channels import store
from workspace_server.channels.configcrypt import encrypt_stored
from workspace_server.channels.inbound import handle_inbound, history_key
from workspace_server.channels.model import Channel, Inbound, obj, s
from workspace_server.channels.providers import telegram
from workspace_server.channels.rows import enabled_channels
from workspace_server.channels.state import INBOUND_GROUP, TASKS_GROUP, Poller, spawn, state_of
from workspace_server.context import AppContext
from workspace_server.loops.leader import Lease
from workspace_server.loops.supervisor import supervise

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 5.0
ERROR_PAUSE = 2.0
HELP = "Write to me and the agent answers. /reset forgets our conversation."


def version(c: Channel) -> str:
    """What a running poller was started with: any change (token, chat ids, allowed users, name) restarts
    it, since the poller holds its channel as it was."""
    return fingerprint(json.dumps([c.config, c.allowed_users], sort_keys=True))


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def manager_loop(ctx: AppContext, lease: Lease | None) -> None:
    st = state_of(ctx)
    swept = False
    try:
        while True:
            st.wake.clear()
            leading = lease is None or lease.held
            if leading and not swept:  # once, by the leader: secret fields in clear or under a retired key
                swept = True
                changed = await encrypt_stored(ctx.settings, ctx.engine)
                if changed:
                    log.info("channels: %d channel configs re-encrypted under the current key", changed)
            await reconcile(ctx, leading)
            try:
                await asyncio.wait_for(
                    st.wake.wait(), RECONCILE_SECONDS if lease is None or lease.held else 1.0
                )
            except TimeoutError:
                pass
    finally:
        await stop_all(ctx)
        await ctx.tasks.cancel(INBOUND_GROUP)  # inbound messages in flight: the loops are stopping


async def stop_all(ctx: AppContext) -> None:
    st = state_of(ctx)
    pollers, st.pollers = list(st.pollers.values()), {}
    for p in pollers:
        p.task.cancel()
    await asyncio.gather(*(p.task for p in pollers), return_exceptions=True)


async def reconcile(ctx: AppContext, leading: bool) -> None:
    st = state_of(ctx)
    wanted: dict[str, Channel] = {}
    if leading:
        for c in await enabled_channels(ctx, "telegram"):
            fp = fingerprint(c.config.get("bot_token", ""))
            # a row with a webhook secret is served by POST /webhooks/telegram: polling would delete the
            # webhook Telegram delivers to (getUpdates and a webhook exclude each other)
            if fp not in st.paused_tokens and not c.config.get("webhook_secret"):
                wanted[c.id] = c
    for cid, p in list(st.pollers.items()):
        want = wanted.get(cid)
        if want is None or p.version != version(want) or p.task.done():
            del st.pollers[cid]
            p.task.cancel()
            await asyncio.gather(p.task, return_exceptions=True)
    for cid, c in wanted.items():
        if cid not in st.pollers:
            name = f"telegram-poller:{cid}"
            task = spawn(ctx, supervise(name, _poller(ctx, c)), name, TASKS_GROUP)
            st.pollers[cid] = Poller(version(c), task)


def _poller(ctx: AppContext, channel: Channel) -> Any:
    return lambda: poll(ctx, channel)


async def poll(ctx: AppContext, channel: Channel) -> None:
    timeout = max(0, ctx.settings.CHANNEL_POLL_TIMEOUT_SECONDS)
    bot = telegram.make_bot(ctx.settings, channel.config.get("bot_token", ""), timeout)
    try:
        await bot.initialize()
        await bot.delete_webhook(drop_pending_updates=False)
    except InvalidToken:
        log.warning("telegram channel %s: bot token refused; poller stopped", channel.id)
        return
    offset = 0
    try:
        while True:
            try:
                updates = await bot.get_updates(
                    offset=offset, timeout=timeout, allowed_updates=telegram.POLL_UPDATES
                )
            except RetryAfter as exc:
                await asyncio.sleep(telegram.retry_seconds(exc))
                continue
            except InvalidToken:
                log.warning("telegram channel %s: bot token refused; poller stopped", channel.id)
                return
            except TelegramError as exc:
                log.info("telegram channel %s: getUpdates failed (%s)", channel.id, type(exc).__name__)
                await asyncio.sleep(ERROR_PAUSE)
                continue
            for u in updates:
                offset = max(offset, u.update_id + 1)
                try:
                    await on_update(ctx, channel, bot, u.to_dict())
                except TelegramError as exc:
                    log.info("telegram channel %s: update not handled (%s)", channel.id, type(exc).__name__)
    finally:
        await bot.shutdown()


async def handle_update(ctx: AppContext, channel: Channel, data: dict[str, Any]) -> None:
    """An update that came by webhook, handled as a poller handles it (commands, buttons, membership)."""
    try:
        async with telegram.make_bot(ctx.settings, channel.config.get("bot_token", "")) as bot:
            await on_update(ctx, channel, bot, data)
    except TelegramError as exc:
        log.info("telegram channel %s: webhook update not handled (%s)", channel.id, type(exc).__name__)


async def on_update(ctx: AppContext, channel: Channel, bot: Bot, data: dict[str, Any]) -> None:
    member = data.get("my_chat_member")
    if isinstance(member, dict):
        await _membership(ctx, channel, bot, member)
        return
    query = data.get("callback_query")
    if isinstance(query, dict):
        await _callback(ctx, channel, bot, query)
        return
    msg = telegram.parse(data)
    if msg is None or not _in_chats(channel, msg.chat_id):
        return
    cmd = telegram.local_command(msg.text)
    if cmd == "start":
        await bot.send_message(msg.chat_id, f"Connected. This chat's id is {msg.chat_id}")
    elif cmd == "help":
        await bot.send_message(msg.chat_id, HELP)
    elif cmd == "reset":
        await ctx.kv.delete(history_key("telegram", msg.chat_id))
        await bot.send_message(msg.chat_id, "Conversation reset.")
    elif cmd == "cancel":
        await bot.send_message(msg.chat_id, "Cancelled.")
    else:
        spawn(ctx, handle_inbound(ctx, channel, msg), f"channel-inbound:{channel.id}")


def _in_chats(channel: Channel, chat: str) -> bool:
    ids = [x.strip() for x in channel.config.get("chat_id", "").split(",") if x.strip()]
    return not ids or chat in ids


async def _membership(ctx: AppContext, channel: Channel, bot: Bot, member: dict[str, Any]) -> None:
    chat = obj(member, "chat")
    new = obj(member, "new_chat_member")
    status, chat_id = s(new.get("status")), s(chat.get("id"))
    if status in ("member", "administrator") and chat_id:
        try:
            await bot.send_message(
                chat_id, f"Hello! This chat's id is {chat_id}; add it to the channel's chat ids."
            )
        except Forbidden:
            pass
    elif (
        status in ("left", "kicked")
        and _in_chats(channel, chat_id)
        and channel.config.get("chat_id", "").strip()
    ):
        # removed from a chat it serves: disable the channel rather than fail forever (the reference's
        # SQL for this could not run)
        log.warning("telegram channel %s: bot removed from a chat; channel disabled", channel.id)
        await store.disable(ctx.engine, channel.id)
        state_of(ctx).wake.set()


async def _callback(ctx: AppContext, channel: Channel, bot: Bot, query: dict[str, Any]) -> None:
    data = s(query.get("data"))[:256]
    await bot.answer_callback_query(s(query.get("id")))
    msg = obj(query, "message")
    chat = obj(msg, "chat")
    chat_id = s(chat.get("id"))
    if not data or not chat_id or not _in_chats(channel, chat_id):
        return
    verdict = "rejected" if data.startswith("reject") else "approved"
    try:
        await bot.edit_message_text(
            f"{s(msg.get('text'))}\n\n✅ CEO {verdict}", chat_id, int(s(msg.get("message_id")) or 0)
        )
    except (TelegramError, ValueError):
        pass
    sender = obj(query, "from")
    inbound = Inbound(
        chat_id, s(sender.get("id")), s(sender.get("username")), f"CEO_DECISION: {data}", s(query.get("id"))
    )
    spawn(ctx, handle_inbound(ctx, channel, inbound), f"channel-inbound:{channel.id}")
