"""Channel CRUD, send, test and Telegram discovery (spec 06 §3.6 "CRUD", "Discover").

Beyond the reference (docs/decisions.md "Channels"): a config is validated on update as on create and a
masked secret sent back keeps the stored one; every sensitive field is encrypted at rest and masked when
listed; send and test find the channel only among `:id`'s (no IDOR) and work without a `chat_id` for
Slack, Discord and Lark; the budget is claimed in the same statement that checks it.
`create_channel(ctx, workspace_id, body)` is the entry point other domains (org import) call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import sqlalchemy.exc
from sqlalchemy.engine import Row
from telegram.error import TelegramError

from workspace_server.channels import adapters, store
from workspace_server.channels.configcrypt import encrypt_config
from workspace_server.channels.manager import fingerprint
from workspace_server.channels.model import Channel, SendError, field_str
from workspace_server.channels.outbound import deliver
from workspace_server.channels.providers import telegram
from workspace_server.channels.rows import to_channel, users_of
from workspace_server.channels.state import reload, spawn, state_of
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id, parse_uuid
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

BAD_BODY = "invalid request body"
BAD_CONFIG = "invalid channel config"
NOT_FOUND = "channel not found"
TEST_TEXT = "🔔 Molecule AI channel test — connection successful!"
MAX_ALLOWED_USERS = 1000
MAX_TEXT = 40_000
MAX_BUDGET = 2**31 - 1


def _users(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_ALLOWED_USERS:
        raise ApiError(400, BAD_BODY)
    if not all(isinstance(u, str) and 0 < len(u) <= 128 for u in raw):
        raise ApiError(400, BAD_BODY)
    return list(raw)


def _budget(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_BUDGET:
        raise ApiError(400, BAD_BODY)
    return raw


def _bool(raw: Any, default: bool) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise ApiError(400, BAD_BODY)
    return raw


def _config(channel_type: str, raw: Any) -> dict[str, str]:
    try:
        config = adapters.normalise(raw if raw is not None else {})
        adapters.validate(channel_type, config)
    except adapters.InvalidConfig:
        raise ApiError(400, BAD_CONFIG) from None
    return config


def view(ctx: AppContext, row: Row[Any]) -> dict[str, Any]:
    channel = to_channel(ctx.settings, row)
    config = adapters.masked(row.channel_type, channel.config) if channel else {}
    out: dict[str, Any] = {
        "id": row.id,
        "workspace_id": row.workspace_id,
        "channel_type": row.channel_type,
        "config": config,
        "enabled": bool(row.enabled),
        "allowed_users": users_of(row),
        "message_count": int(row.message_count),
        "channel_budget": row.channel_budget,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }
    if row.last_message_at is not None:
        out["last_message_at"] = rfc3339(row.last_message_at)
    return out


async def list_channels(ctx: AppContext, ws_id: str) -> list[dict[str, Any]]:
    if parse_uuid(ws_id) is None:
        return []
    return [view(ctx, r) for r in await store.list_for_workspace(ctx.engine, ws_id)]


async def create_channel(ctx: AppContext, workspace_id: str, body: Any) -> dict[str, Any]:
    """Validate, encrypt, insert, reload the pollers; the 201 body `{"id","channel_type","enabled"}`."""
    if not isinstance(body, dict):
        raise ApiError(400, BAD_BODY)
    channel_type = body.get("channel_type")
    if not isinstance(channel_type, str) or not channel_type.strip():
        raise ApiError(400, "channel_type is required")
    channel_type = channel_type.strip()
    if channel_type not in adapters.ADAPTERS:
        raise ApiError(400, f"unsupported channel_type: {channel_type[:64]}")
    config = _config(channel_type, body.get("config"))
    users, enabled, budget = (
        _users(body.get("allowed_users")),
        _bool(body.get("enabled"), True),
        _budget(body.get("channel_budget")),
    )
    ws_id = parse_uuid(workspace_id)
    async with ctx.engine.connect() as conn:
        if ws_id is None or await get_workspace(conn, ws_id) is None:
            raise ApiError(404, "workspace not found")
    channel_id = new_id()
    values = {
        "id": channel_id,
        "workspace_id": ws_id,
        "channel_type": channel_type,
        "channel_config": encrypt_config(ctx.settings, channel_type, config),
        "enabled": enabled,
        "allowed_users": users,
        "channel_budget": budget,
    }
    try:
        await store.insert(ctx.engine, values)
    except sqlalchemy.exc.IntegrityError:  # one channel per type per workspace: 409, not the reference's 500
        raise ApiError(409, "failed to create channel") from None
    reload(ctx)
    return {"id": channel_id, "channel_type": channel_type, "enabled": enabled}


async def _row(ctx: AppContext, ws_id: str, channel_id: str) -> Row[Any]:
    if parse_uuid(ws_id) is None or parse_uuid(channel_id) is None:
        raise ApiError(404, NOT_FOUND)
    row = await store.get(ctx.engine, parse_uuid(channel_id) or "", parse_uuid(ws_id))
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return row


async def update_channel(ctx: AppContext, ws_id: str, channel_id: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, BAD_BODY)
    row = await _row(ctx, ws_id, channel_id)
    values: dict[str, Any] = {}
    if body.get("config") is not None:
        current = to_channel(ctx.settings, row)
        new = adapters.keep_unchanged_secrets(
            row.channel_type, _config_raw(body["config"]), current.config if current else {}
        )
        values["channel_config"] = encrypt_config(
            ctx.settings, row.channel_type, _config(row.channel_type, new)
        )
    if body.get("allowed_users") is not None:
        values["allowed_users"] = _users(body["allowed_users"])
    if body.get("enabled") is not None:
        values["enabled"] = _bool(body["enabled"], True)
    if "channel_budget" in body:
        values["channel_budget"] = _budget(body["channel_budget"])
    if await store.update(ctx.engine, row.id, row.workspace_id, values) == 0:
        raise ApiError(404, NOT_FOUND)
    reload(ctx)
    return {"status": "updated"}


def _config_raw(raw: Any) -> dict[str, str]:
    try:
        return adapters.normalise(raw)
    except adapters.InvalidConfig:
        raise ApiError(400, BAD_CONFIG) from None


async def delete_channel(ctx: AppContext, ws_id: str, channel_id: str) -> dict[str, Any]:
    row = await _row(ctx, ws_id, channel_id)
    if await store.delete(ctx.engine, row.id, row.workspace_id) == 0:
        raise ApiError(404, NOT_FOUND)
    reload(ctx)
    return {"status": "deleted"}


async def send_text(ctx: AppContext, ws_id: str, channel_id: str, text: str) -> None:
    """Post on the channel if its budget allows (429 `channel budget exceeded`). A provider failure is 502
    `send failed` (the reference's 500: it is the provider's failure, not ours)."""
    row = await _row(ctx, ws_id, channel_id)
    channel: Channel | None = to_channel(ctx.settings, row)
    if channel is None:  # its config cannot be decrypted (the key changed)
        raise ApiError(502, "send failed")
    if not await store.claim_message(ctx.engine, channel.id, utcnow()):
        raise ApiError(429, "channel budget exceeded")
    try:
        await deliver(ctx, channel, text)
    except SendError as exc:
        await store.release_message(ctx.engine, channel.id)
        log.warning("channel %s: send failed: %s", channel.id, exc)
        raise ApiError(502, "send failed") from None
    await ctx.events.broadcast(
        "CHANNEL_MESSAGE",
        channel.workspace_id,
        {
            "channel_id": channel.id,
            "channel_type": channel.channel_type,
            "username": "",
            "direction": "outbound",
        },
    )


def parse_text(body: Any) -> str:
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "text is required")
    if len(text) > MAX_TEXT:
        raise ApiError(400, BAD_BODY)
    return text


async def discover(ctx: AppContext, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, BAD_BODY)
    channel_type = field_str(body, "channel_type")
    token = field_str(body, "bot_token")
    ws = field_str(body, "workspace_id")
    if not token.strip():
        raise ApiError(400, "bot_token is required")
    if not ws.strip():
        raise ApiError(400, "workspace_id is required")
    channel_type = channel_type.strip() or "telegram"
    if channel_type not in adapters.ADAPTERS:
        raise ApiError(400, f"unsupported channel_type: {channel_type[:64]}")
    if channel_type != "telegram":
        raise ApiError(400, f"discovery not supported for {channel_type}")
    token = token.strip()
    if not adapters.TELEGRAM_TOKEN.match(token):
        raise ApiError(400, "invalid bot token format")
    st, fp = state_of(ctx), fingerprint(token)
    # getUpdates admits one reader per token: pause this deployment's poller of the same bot meanwhile
    st.paused_tokens.add(fp)
    reload(ctx)
    try:
        return await telegram.discover(ctx.settings, token)
    except TelegramError as exc:
        raise ApiError(
            400, f"telegram refused the request ({type(exc).__name__}); check the bot token"
        ) from None
    finally:
        spawn(ctx, _resume(ctx, fp), "channels-discover-resume")


async def _resume(ctx: AppContext, fp: str) -> None:
    await asyncio.sleep(1.0)
    state_of(ctx).paused_tokens.discard(fp)
    reload(ctx)
