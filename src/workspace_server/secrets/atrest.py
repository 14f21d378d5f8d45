"""Secrets at rest, at start-up (issue 11 §1): the key in effect, then every row brought under it.

- Outside production, with no `SECRETS_ENCRYPTION_KEY`, the key is generated on first start into
  `Settings.secrets_key_file` (mode 0600, beside the SQLite database or in `DATA_DIR`). A start that finds
  encrypted rows but no key file, or a key file that does not decrypt them, refuses to start rather than
  write new secrets under a second key.
- Rows still in plaintext (`encryption_version=0`, written before a key existed) and, while
  `SECRETS_ENCRYPTION_KEY_PREVIOUS` is set, rows under a retired key are re-encrypted under the current
  key. Each row is rewritten by a compare-and-set UPDATE (same id, version and bytes as read), inside one
  transaction per table: a crash rolls the table's pass back, every row stays readable either way (a
  plaintext row is served as such), and the next start finishes the job; a concurrent writer's newer
  value is never overwritten.
"""

from __future__ import annotations

import logging

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.config import Settings
from workspace_server.db.schema import global_secrets, workspace_secrets
from workspace_server.secrets.crypto import (
    VERSION_AES_GCM,
    VERSION_PLAINTEXT,
    DecryptError,
    SecretsCrypto,
    SecretsCryptoUnavailable,
    create_key_file,
    crypto_for,
    reload_key_file,
    uses_key_file,
)

log = logging.getLogger(__name__)

TABLES = (workspace_secrets, global_secrets)


async def prepare(settings: Settings, engine: AsyncEngine) -> SecretsCrypto:
    """Run once per start, after migrations and before serving."""
    if not uses_key_file(settings):
        crypto = crypto_for(settings)
    else:
        sample = await _sample_encrypted(engine)  # one stored ciphertext, if any: the key must read it
        await _ensure_key_file(settings, encrypted_rows=sample is not None)
        reload_key_file(settings)
        crypto = crypto_for(settings)
        if sample is not None:
            _check_key_decrypts(settings, crypto, sample)
    if crypto.enabled:
        await reencrypt(engine, crypto)
    return crypto


async def _ensure_key_file(settings: Settings, *, encrypted_rows: bool) -> None:
    path = settings.secrets_key_file
    if await anyio.to_thread.run_sync(path.exists):
        return
    if encrypted_rows:
        raise SecretsCryptoUnavailable(
            f"stored secrets are encrypted but the secrets key file {path} does not exist; restore it "
            "(or set SECRETS_ENCRYPTION_KEY to the key they were written with) before starting"
        )
    if await anyio.to_thread.run_sync(create_key_file, path):
        log.warning(
            "generated the secrets encryption key in %s (mode 0600): back it up with the database, "
            "secrets cannot be read without it",
            path,
        )


async def _sample_encrypted(engine: AsyncEngine) -> tuple[bytes, int] | None:
    async with engine.connect() as conn:
        for t in TABLES:
            q = sa.select(t.c.encrypted_value, t.c.encryption_version)
            row = (await conn.execute(q.where(t.c.encryption_version != VERSION_PLAINTEXT).limit(1))).first()
            if row is not None:
                return bytes(row.encrypted_value), int(row.encryption_version)
    return None


def _check_key_decrypts(settings: Settings, crypto: SecretsCrypto, sample: tuple[bytes, int]) -> None:
    try:
        crypto.decrypt(*sample)
    except DecryptError:
        raise SecretsCryptoUnavailable(
            f"the key in {settings.secrets_key_file} does not decrypt the stored secrets; restore the key "
            "file they were written with (or set SECRETS_ENCRYPTION_KEY to that key)"
        ) from None


async def reencrypt(engine: AsyncEngine, crypto: SecretsCrypto) -> int:
    """Bring plaintext rows (and, with retired keys configured, rows under them) under the current key;
    the number of rows rewritten. Rows that decrypt under no key are left alone (reads report them)."""
    total = 0
    for t in TABLES:
        total += await _reencrypt_table(engine, crypto, t)
    if total:
        log.info("secrets: %d stored value(s) re-encrypted under the current key", total)
    return total


async def _reencrypt_table(engine: AsyncEngine, crypto: SecretsCrypto, t: sa.Table) -> int:
    q = sa.select(t.c.id, t.c.encrypted_value, t.c.encryption_version)
    if not crypto.has_previous:
        q = q.where(t.c.encryption_version == VERSION_PLAINTEXT)
    done = 0
    async with engine.begin() as conn:
        for row in (await conn.execute(q)).all():
            old, version = bytes(row.encrypted_value), int(row.encryption_version)
            try:
                plain, current = crypto.decrypt_with_current(old, version)
            except DecryptError:
                log.error(
                    "secrets: %s row %s decrypts under no configured key; left as it is", t.name, row.id
                )
                continue
            if current:
                continue
            stored, new_version = crypto.encrypt(plain)
            assert new_version == VERSION_AES_GCM
            res = await conn.execute(
                t.update()
                .where(t.c.id == row.id, t.c.encryption_version == version, t.c.encrypted_value == old)
                .values(encrypted_value=stored, encryption_version=new_version)
            )
            done += res.rowcount or 0
    return done
