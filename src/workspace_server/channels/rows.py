"""Rows → `Channel`s with their configs decrypted (a row that cannot be decrypted is skipped, logged)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Row

from workspace_server.channels import store
from workspace_server.channels.configcrypt import decrypt_config
from workspace_server.channels.model import Channel
from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.secrets.crypto import DecryptError

log = logging.getLogger(__name__)


def config_of(row: Row[Any]) -> dict[str, str]:
    raw = row.channel_config if isinstance(row.channel_config, dict) else {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in raw.items()}


def users_of(row: Row[Any]) -> list[str]:
    raw = row.allowed_users if isinstance(row.allowed_users, list) else []
    return [str(u) for u in raw]


def to_channel(settings: Settings, row: Row[Any]) -> Channel | None:
    try:
        config = decrypt_config(settings, config_of(row))
    except (DecryptError, UnicodeDecodeError):
        log.warning("channel %s: config cannot be decrypted; skipped", row.id)
        return None
    return Channel(row.id, row.workspace_id, row.channel_type, config, bool(row.enabled), users_of(row))


async def enabled_channels(ctx: AppContext, channel_type: str) -> list[Channel]:
    rows = await store.enabled_of_type(ctx.engine, channel_type)
    return [c for c in (to_channel(ctx.settings, r) for r in rows) if c is not None]
