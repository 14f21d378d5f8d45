"""Secret fields of a channel config at rest: `ec1:` + base64(nonce ‖ AES-256-GCM), the secrets key.

Unprefixed values read as they are (rows written before a key existed, spec 06 §3.6); prefixed values are
never encrypted twice. Without a key (encryption disabled outside production) values stay plaintext, as
for workspace secrets.
"""

from __future__ import annotations

import base64
import binascii

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
