"""Secret encryption at rest (spec 05 §1): AES-256-GCM, 12-byte random nonce prefixed, no AAD.

`SECRETS_ENCRYPTION_KEY` is standard base64 of exactly 32 bytes; only when it is not valid base64 and is
itself 32 bytes long is the raw string used. Each row records its version (0 plaintext, 1 AES-GCM), so
rows written before a key existed stay readable (#85). `init_strict` is the start-up gate (spec 06 §2.1
item 3): production refuses to start without a valid key.

Outside production an unset key means the generated one (issue 11 §1): `secrets/atrest.py` creates
`Settings.secrets_key_file` (mode 0600) on first start and this module reads it. A key that is set but
malformed still disables encryption with a warning, as before. `SECRETS_ENCRYPTION_KEY_PREVIOUS` lists
retired keys that are still tried when the current one does not decrypt a row (key rotation).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

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


class SecretsCryptoUnavailable(EncryptionKeyRequired):
    """The generated key cannot be used: unreadable or malformed key file, or encrypted rows without it."""


KEY_FILE_MODE = 0o600


class SecretsCrypto:
    def __init__(self, key: bytes | None, previous: Sequence[bytes] = ()) -> None:
        self._aead = AESGCM(key) if key else None
        self._previous = [AESGCM(k) for k in previous]

    @property
    def enabled(self) -> bool:
        return self._aead is not None

    @property
    def has_previous(self) -> bool:
        return bool(self._previous)

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
        return self.decrypt_with_current(stored, version)[0]

    def decrypt_with_current(self, stored: bytes, version: int) -> tuple[bytes, bool]:
        """(plaintext, whether it is stored as the current key would store it: encrypted under it)."""
        if version == VERSION_PLAINTEXT:
            return stored, not self.enabled  # historical plaintext rows stay readable after a key is set
        if version != VERSION_AES_GCM:
            raise DecryptError(f"unknown encryption_version {version}")
        if self._aead is None and not self._previous:
            raise DecryptError("value is encrypted but no SECRETS_ENCRYPTION_KEY is configured")
        if len(stored) < NONCE_BYTES + 16:
            raise DecryptError("ciphertext too short")
        nonce, body = stored[:NONCE_BYTES], stored[NONCE_BYTES:]
        for i, aead in enumerate([a for a in (self._aead,) if a is not None] + self._previous):
            try:
                return aead.decrypt(nonce, body, None), i == 0 and self._aead is not None
            except InvalidTag:
                continue
        raise DecryptError("authentication failed")


_cache: dict[str, SecretsCrypto] = {}
_warned: set[str] = set()
_lock = threading.Lock()


def _previous_keys(raw: str) -> list[bytes]:
    keys = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        key = parse_key(part)
        if key is None:
            log.warning("SECRETS_ENCRYPTION_KEY_PREVIOUS holds an entry that is not a valid key; ignored")
            continue
        keys.append(key)
    return keys


def uses_key_file(settings: Settings) -> bool:
    """The generated key is in effect: no SECRETS_ENCRYPTION_KEY, outside production."""
    return not settings.SECRETS_ENCRYPTION_KEY and not settings.is_production


def _cache_key(settings: Settings) -> tuple[str, Path | None]:
    raw, previous = settings.SECRETS_ENCRYPTION_KEY, settings.SECRETS_ENCRYPTION_KEY_PREVIOUS
    path = settings.secrets_key_file if uses_key_file(settings) else None
    return f"{raw}\0{previous}\0{path or ''}", path


def reload_key_file(settings: Settings) -> None:
    """Forget the cached key of `settings`' key file: the next `crypto_for` reads the file again."""
    cache_key, path = _cache_key(settings)
    if path is not None:
        with _lock:
            _cache.pop(cache_key, None)


def crypto_for(settings: Settings) -> SecretsCrypto:
    """One SecretsCrypto per configured key (or key file); warns once when encryption is disabled."""
    previous = settings.SECRETS_ENCRYPTION_KEY_PREVIOUS
    cache_key, path = _cache_key(settings)
    raw = settings.SECRETS_ENCRYPTION_KEY
    with _lock:
        found = _cache.get(cache_key)
        if found is not None:
            return found
        if path is not None:
            key = read_key_file(path)
            if key is None:  # not created yet (start-up creates it): plaintext for now, not cached
                if cache_key not in _warned:
                    _warned.add(cache_key)
                    log.warning("secrets key file %s does not exist; secrets are stored unencrypted", path)
                return SecretsCrypto(None, _previous_keys(previous))
        else:
            key = parse_key(raw)
            if key is None:
                log.warning(
                    "%s; secrets are stored unencrypted (encryption_version=0). Expected: %s",
                    key_problem(raw),
                    KEY_FORMAT_HINT,
                )
        found = _cache[cache_key] = SecretsCrypto(key, _previous_keys(previous))
        return found


def read_key_file(path: Path) -> bytes | None:
    """The key in `path`, None when the file does not exist; unreadable or malformed is fatal."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsCryptoUnavailable(
            f"secrets key file {path} cannot be read ({type(exc).__name__})"
        ) from None
    key = parse_key(text)
    if key is None:
        raise SecretsCryptoUnavailable(
            f"secrets key file {path} does not hold a valid key ({KEY_FORMAT_HINT}); "
            "restore it, or set SECRETS_ENCRYPTION_KEY"
        )
    return key


def create_key_file(path: Path) -> bool:
    """Write a fresh random key to `path` (mode 0600), atomically: the file appears complete or not at all,
    and when two processes race the first one's key wins. False when the file already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: never replaces a key that may already encrypt rows
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def init_strict(settings: Settings) -> SecretsCrypto | None:
    """Start-up gate: in production a missing or malformed key is fatal (before the database is touched);
    a key that is set but malformed elsewhere warns (once). None when the generated key file is in effect:
    `secrets/atrest.py::prepare` creates or checks it once the database is migrated."""
    problem = key_problem(settings.SECRETS_ENCRYPTION_KEY)
    if problem is not None and settings.is_production:
        raise EncryptionKeyRequired(
            f"{problem}; MOLECULE_ENV={settings.env_name} requires it. "
            f"Set SECRETS_ENCRYPTION_KEY to {KEY_FORMAT_HINT}."
        )
    return None if uses_key_file(settings) else crypto_for(settings)
