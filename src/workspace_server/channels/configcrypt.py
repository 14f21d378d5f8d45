"""Secret fields of a channel config at rest: `ec1:` + base64(nonce ‖ AES-256-GCM), the secrets key.

Unprefixed values read as they are (rows written before a key existed, spec 06 §3.6); prefixed values are
never encrypted twice. Without a key (encryption disabled outside production) values stay plaintext, as
for workspace secrets.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.channels import store
from workspace_server.channels.adapters import ADAPTERS
from workspace_server.config import Settings
from workspace_server.secrets.crypto import VERSION_AES_GCM, DecryptError, crypto_for

PREFIX = "ec1:"


def encrypt_config(settings: Settings, channel_type: str, config: dict[str, str]) -> dict[str, str]:
    crypto = crypto_for(settings)
    if not crypto.enabled:
        return dict(config)
    secret = ADAPTERS[channel_type].secret_keys
    out: dict[str, str] = {}
    for k, v in config.items():
        if k in secret and v and not v.startswith(PREFIX):
            stored, _ = crypto.encrypt(v.encode())
            v = PREFIX + base64.b64encode(stored).decode()
        out[k] = v
    return out


def decrypt_config(settings: Settings, config: dict[str, str]) -> dict[str, str]:
    """Raises DecryptError when a value cannot be read back (wrong key, corrupt)."""
    crypto = crypto_for(settings)
    out: dict[str, str] = {}
    for k, v in config.items():
        if isinstance(v, str) and v.startswith(PREFIX):
            try:
                raw = base64.b64decode(v[len(PREFIX) :], validate=True)
            except (binascii.Error, ValueError):
                raise DecryptError("malformed ec1 value") from None
            v = crypto.decrypt(raw, VERSION_AES_GCM).decode()
        out[k] = v if isinstance(v, str) else str(v)
    return out


def _rewritten(settings: Settings, channel_type: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """`config` with every secret field under the current key, or None when it already is."""
    crypto = crypto_for(settings)
    secret = ADAPTERS[channel_type].secret_keys if channel_type in ADAPTERS else frozenset()
    out, changed = dict(config), False
    for k in secret:
        v = config.get(k)
        if not isinstance(v, str) or not v:
            continue
        if v.startswith(PREFIX):
            try:
                plain, current = crypto.decrypt_with_current(
                    base64.b64decode(v[len(PREFIX) :]), VERSION_AES_GCM
                )
            except (DecryptError, binascii.Error, ValueError):
                continue  # unreadable: left for an operator (reads skip the row, logged)
            if current:
                continue
            v = plain.decode()
        stored, _ = crypto.encrypt(v.encode())
        out[k], changed = PREFIX + base64.b64encode(stored).decode(), True
    return out if changed else None


async def encrypt_stored(settings: Settings, engine: AsyncEngine) -> int:
    """Rewrite secret fields stored in clear (rows from before a key existed, or written by a path that did
    not encrypt) or under a retired key (SECRETS_ENCRYPTION_KEY_PREVIOUS) under the current key; how many
    rows changed. Run once by the channel manager when it first leads."""
    if not crypto_for(settings).enabled:
        return 0
    changed = 0
    for row in await store.all_configs(engine):
        config = row.channel_config if isinstance(row.channel_config, dict) else {}
        new = _rewritten(settings, row.channel_type, config)
        if new is not None:
            await store.set_config(engine, row.id, new, config)
            changed += 1
    return changed
