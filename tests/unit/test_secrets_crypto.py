"""secrets/crypto.py: key parsing, AES-GCM versions, and the production start-up gate (spec 05 §1, §11)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from workspace_server.config import Settings
from workspace_server.secrets.crypto import (
    VERSION_AES_GCM,
    VERSION_PLAINTEXT,
    DecryptError,
    EncryptionKeyRequired,
    SecretsCrypto,
    crypto_for,
    init_strict,
    parse_key,
)

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"MOLECULE_ENV": "", "SECRETS_ENCRYPTION_KEY": ""}
    return Settings(**{**base, **kw})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (KEY_B64, KEY),
        ("", None),
        (base64.b64encode(bytes(16)).decode(), None),  # 16 bytes: AES-128 is not accepted
        ("abcdefghijklmnopqrstuvwxyz012345", None),  # 32 chars but valid base64 of 24 bytes
        ("short!", None),
        ("!" * 32, b"!" * 32),  # not base64: the raw 32 bytes are the key
        ("!" * 31, None),
    ],
)
def test_parse_key(raw: str, expected: bytes | None) -> None:
    assert parse_key(raw) == expected


def test_round_trip_and_versions() -> None:
    c = SecretsCrypto(KEY)
    for plain in (b"", b"v", "päss ✓".encode(), bytes(range(256))):
        stored, version = c.encrypt(plain)
        assert version == VERSION_AES_GCM
        assert len(stored) == 12 + len(plain) + 16
        assert c.decrypt(stored, version) == plain
    a, _ = c.encrypt(b"same")
    b, _ = c.encrypt(b"same")
    assert a != b  # fresh nonce each time


def test_plaintext_mode_and_v0_rows() -> None:
    off = SecretsCrypto(None)
    assert off.encrypt(b"v") == (b"v", VERSION_PLAINTEXT)
    assert SecretsCrypto(KEY).decrypt(b"legacy", VERSION_PLAINTEXT) == b"legacy"


def test_decrypt_failures() -> None:
    stored, version = SecretsCrypto(KEY).encrypt(b"v")
    with pytest.raises(DecryptError):
        SecretsCrypto(bytes(32)).decrypt(stored, version)  # wrong key
    with pytest.raises(DecryptError):
        SecretsCrypto(None).decrypt(stored, version)  # encrypted row, no key
    with pytest.raises(DecryptError):
        SecretsCrypto(KEY).decrypt(stored, 2)  # unknown version
    with pytest.raises(DecryptError):
        SecretsCrypto(KEY).decrypt(stored[:20], version)  # truncated
    tampered = stored[:-1] + bytes([stored[-1] ^ 1])
    with pytest.raises(DecryptError):
        SecretsCrypto(KEY).decrypt(tampered, version)


@pytest.mark.parametrize("env", ["prod", "production", "  prod  ", "PROD", "Production"])
@pytest.mark.parametrize(
    "key", ["", "abcdefghijklmnopqrstuvwxyz012345", base64.b64encode(bytes(16)).decode()]
)
def test_init_strict_refuses_production_without_a_valid_key(env: str, key: str) -> None:
    with pytest.raises(EncryptionKeyRequired) as err:
        init_strict(settings(MOLECULE_ENV=env, SECRETS_ENCRYPTION_KEY=key))
    msg = str(err.value)
    assert "SECRETS_ENCRYPTION_KEY" in msg and "base64 of exactly 32" in msg
    assert not key or key not in msg  # the (bad) key itself is never echoed


@pytest.mark.parametrize("env", ["", "staging", "dev", "development", "test", "productionish"])
def test_init_strict_only_warns_elsewhere(env: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    bad = f"not-a-key-{env or 'empty'}"  # a fresh value, so the one-time warning fires here
    crypto = init_strict(settings(MOLECULE_ENV=env, SECRETS_ENCRYPTION_KEY=bad))
    assert not crypto.enabled
    assert crypto.encrypt(b"v") == (b"v", VERSION_PLAINTEXT)
    warnings = [r for r in caplog.records if "stored unencrypted" in r.getMessage()]
    assert len(warnings) == 1 and bad not in caplog.text
    init_strict(settings(MOLECULE_ENV=env, SECRETS_ENCRYPTION_KEY=bad))
    assert len([r for r in caplog.records if "stored unencrypted" in r.getMessage()]) == 1  # once


def test_init_strict_with_key_in_production() -> None:
    crypto = init_strict(settings(MOLECULE_ENV="production", SECRETS_ENCRYPTION_KEY=KEY_B64))
    assert crypto.enabled and crypto is crypto_for(settings(SECRETS_ENCRYPTION_KEY=KEY_B64))
    stored, version = crypto.encrypt(b"v")
    assert (version, SecretsCrypto(KEY).decrypt(stored, version)) == (VERSION_AES_GCM, b"v")


def test_key_file_location() -> None:
    from pathlib import Path

    assert settings(DATABASE_URL="sqlite:///./data/ws.db").secrets_key_file == Path("data/secrets.key")
    assert settings(DATABASE_URL="sqlite:////srv/db/ws.db?x=1").secrets_key_file == Path(
        "/srv/db/secrets.key"
    )
    pg = settings(DATABASE_URL="postgres://u@h/db", DATA_DIR="/var/lib/ws")
    assert pg.secrets_key_file == Path("/var/lib/ws/secrets.key")
    mem = settings(DATABASE_URL="sqlite:///:memory:", DATA_DIR="/d")
    assert mem.secrets_key_file == Path("/d/secrets.key")
    assert settings(SECRETS_KEY_FILE="/k/key").secrets_key_file == Path("/k/key")


def test_key_file_is_created_once_with_mode_0600(tmp_path: Any) -> None:
    import stat

    from workspace_server.secrets.crypto import create_key_file, read_key_file

    path = tmp_path / "sub" / "secrets.key"
    assert create_key_file(path) is True
    first = read_key_file(path)
    assert first is not None and len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert create_key_file(path) is False  # a second start (or a racing one) keeps the first key
    assert read_key_file(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secrets.key"]  # no temp file left behind
    assert read_key_file(tmp_path / "missing") is None


def test_previous_keys_decrypt_and_report_not_current() -> None:
    old, new = SecretsCrypto(KEY), bytes(range(1, 33))
    stored, version = old.encrypt(b"v")
    rotating = SecretsCrypto(new, [KEY])
    assert rotating.decrypt_with_current(stored, version) == (b"v", False)
    fresh, v = rotating.encrypt(b"w")
    assert rotating.decrypt_with_current(fresh, v) == (b"w", True)
    assert SecretsCrypto(new).decrypt_with_current(b"p", VERSION_PLAINTEXT) == (b"p", False)
    with pytest.raises(DecryptError):
        SecretsCrypto(new).decrypt(stored, version)
