"""Secret encryption at rest (spec 05 §1): AES-256-GCM, 12-byte random nonce prefixed, no AAD.

`SECRETS_ENCRYPTION_KEY` is standard base64 of exactly 32 bytes; only when it is not valid base64 and is
itself 32 bytes long is the raw string used. Anything else disables encryption with a warning: rows are
then written with `encryption_version=0` (plaintext). Each row records its version, so turning a key on
later does not break rows written before (#85). `init_strict` is the start-up gate (spec 06 §2.1 item 3):
production refuses to start without a valid key; elsewhere it warns once and plaintext is stored.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from workspace_server.config import Settings

log = logging.getLogger(__name__)

VERSION_PLAINTEXT = 0
VERSION_AES_GCM = 1
NONCE_BYTES = 12
KEY_BYTES = 32


KEY_FORMAT_HINT = (
    "standard base64 of exactly 32 random bytes (e.g. `openssl rand -base64 32`) or a raw 32-byte string"
)


class DecryptError(Exception):
    """The stored value cannot be turned back into plaintext (no key, wrong key, corrupt, unknown version)."""


def parse_key(raw: str) -> bytes | None:
    """The 32-byte key `raw` denotes, or None (encryption disabled)."""
    if not raw:
        return None
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        encoded = raw.encode()
        return encoded if len(encoded) == KEY_BYTES else None
    # valid base64 of the wrong length is not retried as a raw key (a 32-char base64 string is 24 bytes)
    return decoded if len(decoded) == KEY_BYTES else None


class EncryptionKeyRequired(RuntimeError):
    """Production (MOLECULE_ENV=prod|production) without a usable SECRETS_ENCRYPTION_KEY: refuse to start."""


def key_problem(raw: str) -> str | None:
    """Why `raw` is not a usable key (never echoing it), or None when it is."""
    if not raw:
        return "SECRETS_ENCRYPTION_KEY is not set"
    if parse_key(raw) is None:
        return "SECRETS_ENCRYPTION_KEY is not a valid key"
    return None


class SecretsCrypto:
    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key else None

    @property
    def enabled(self) -> bool:
        return self._aead is not None

    @property
    def version(self) -> int:
        """The encryption_version a writer stores for a value encrypted now."""
        return VERSION_AES_GCM if self._aead else VERSION_PLAINTEXT

    def encrypt(self, plaintext: bytes) -> tuple[bytes, int]:
        """(stored bytes, encryption_version)."""
        if self._aead is None:
            return plaintext, VERSION_PLAINTEXT
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, None), VERSION_AES_GCM

    def decrypt(self, stored: bytes, version: int) -> bytes:
        if version == VERSION_PLAINTEXT:
            return stored  # historical plaintext rows stay readable after a key is configured
        if version != VERSION_AES_GCM:
            raise DecryptError(f"unknown encryption_version {version}")
        if self._aead is None:
            raise DecryptError("value is encrypted but no SECRETS_ENCRYPTION_KEY is configured")
        if len(stored) < NONCE_BYTES + 16:
            raise DecryptError("ciphertext too short")
        try:
            return self._aead.decrypt(stored[:NONCE_BYTES], stored[NONCE_BYTES:], None)
        except InvalidTag:
            raise DecryptError("authentication failed") from None


_cache: dict[str, SecretsCrypto] = {}
_lock = threading.Lock()


def crypto_for(settings: Settings) -> SecretsCrypto:
    """One SecretsCrypto per configured key; warns once when encryption is disabled."""
    raw = settings.SECRETS_ENCRYPTION_KEY
    with _lock:
        found = _cache.get(raw)
        if found is None:
            key = parse_key(raw)
            if key is None:
                log.warning(
                    "%s; secrets are stored unencrypted (encryption_version=0). Expected: %s",
                    key_problem(raw),
                    KEY_FORMAT_HINT,
                )
            found = _cache[raw] = SecretsCrypto(key)
        return found


def init_strict(settings: Settings) -> SecretsCrypto:
    """Start-up gate: in production a missing or malformed key is fatal; elsewhere warn (once) and go on."""
    problem = key_problem(settings.SECRETS_ENCRYPTION_KEY)
    if problem is not None and settings.is_production:
        raise EncryptionKeyRequired(
            f"{problem}; MOLECULE_ENV={settings.env_name} requires it. "
            f"Set SECRETS_ENCRYPTION_KEY to {KEY_FORMAT_HINT}."
        )
    return crypto_for(settings)
