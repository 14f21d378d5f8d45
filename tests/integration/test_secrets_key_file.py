"""Secrets encrypted at rest by default (issue 11 §1): the generated key file, the start-up pass that
encrypts plaintext rows, the refusals that keep a second key from being used, and key rotation."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.integration.secrets_support import (
    ADMIN_H,
    KEY_A,
    KEY_B,
    admin_client,
    ctx_of,
    global_rows,
    make_ws,
    ws_rows,
)
from workspace_server.secrets import store
from workspace_server.secrets.atrest import reencrypt
from workspace_server.secrets.crypto import SecretsCryptoUnavailable, crypto_for


def key_file(client: httpx.AsyncClient) -> Path:
    path: Path = ctx_of(client).settings.secrets_key_file
    return path


async def put_secret(client: httpx.AsyncClient, ws: str, key: str, value: str) -> None:
    r = await client.post(f"/workspaces/{ws}/secrets", json={"key": key, "value": value}, headers=ADMIN_H)
    assert r.status_code == 200, r.text


async def values(client: httpx.AsyncClient, ws: str) -> tuple[int, Any]:
    r = await client.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    return r.status_code, r.json()


async def test_first_start_generates_a_key_beside_the_database(
    client_factory: ClientFactory, db_url: str, tmp_path: Path
) -> None:
    client = await admin_client(client_factory)
    path = key_file(client)
    # SQLite: beside the database file; Postgres: in DATA_DIR
    want = tmp_path / "secrets.key" if db_url.startswith("sqlite") else tmp_path / "data" / "secrets.key"
    assert path == want and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip(), validate=True)) == 32
    content = path.read_text()

    ws = await make_ws(client)
    await put_secret(client, ws, "K", "value-1")
    (row,) = await ws_rows(client, ws)
    assert row.encryption_version == 1 and b"value-1" not in bytes(row.encrypted_value)

    # a restart reads the same key: the value reads back, the file is not replaced
    again = await admin_client(client_factory)
    assert await values(again, ws) == (200, {"K": "value-1"})
    assert path.read_text() == content


async def test_plaintext_rows_are_encrypted_at_start(client_factory: ClientFactory) -> None:
    first = await admin_client(client_factory)
    ws = await make_ws(first)
    async with ctx_of(first).engine.begin() as conn:  # rows as a keyless server wrote them before
        await store.upsert_workspace_secret(conn, ws, "OLD", b"old-plain", 0)
        await store.upsert_global_secret(conn, "G_OLD", b"g-plain", 0)
        await store.upsert_global_secret(conn, "FUTURE", b"unknown-version", 7)
    assert await values(first, ws) == (
        500,
        {
            "error": "one or more secrets failed to decrypt; refusing to return partial bundle",
            "failed_keys": ["global:FUTURE"],
        },
    )
    async with ctx_of(first).engine.begin() as conn:
        await store.delete_global_secret(conn, "FUTURE")

    second = await admin_client(client_factory)  # the start-up pass
    (row,) = await ws_rows(second, ws)
    assert row.encryption_version == 1 and b"old-plain" not in bytes(row.encrypted_value)
    assert [(g.key, g.encryption_version) for g in await global_rows(second)] == [("G_OLD", 1)]
    assert await values(second, ws) == (200, {"G_OLD": "g-plain", "OLD": "old-plain"})
    # nothing left to do: the pass is idempotent
    ctx = ctx_of(second)
    assert await reencrypt(ctx.engine, crypto_for(ctx.settings)) == 0


async def test_missing_key_file_with_encrypted_rows_refuses_to_start(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    await put_secret(client, ws, "K", "v")
    path = key_file(client)
    path.unlink()
    with pytest.raises(SecretsCryptoUnavailable, match="does not exist"):
        await admin_client(client_factory)
    assert not path.exists()  # no second key was generated

    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")  # another key
    with pytest.raises(SecretsCryptoUnavailable, match="does not decrypt"):
        await admin_client(client_factory)
    path.write_text("not a key\n")
    with pytest.raises(SecretsCryptoUnavailable, match="does not hold a valid key"):
        await admin_client(client_factory)


async def test_rotation_with_the_previous_key(client_factory: ClientFactory) -> None:
    under_a = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    ws = await make_ws(under_a)
    await put_secret(under_a, ws, "W", "w-value")
    await under_a.put("/settings/secrets", json={"key": "G", "value": "g-value"}, headers=ADMIN_H)
    before = {r.key: bytes(r.encrypted_value) for r in await ws_rows(under_a, ws)}

    rotating = await admin_client(
        client_factory, SECRETS_ENCRYPTION_KEY=KEY_B, SECRETS_ENCRYPTION_KEY_PREVIOUS=KEY_A
    )
    assert await values(rotating, ws) == (200, {"G": "g-value", "W": "w-value"})
    assert {r.key: bytes(r.encrypted_value) for r in await ws_rows(rotating, ws)} != before

    under_b = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_B)  # the old key retired
    assert await values(under_b, ws) == (200, {"G": "g-value", "W": "w-value"})
    stale = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    status, body = await values(stale, ws)
    assert status == 500 and body["failed_keys"] == ["global:G", "workspace:W"]


async def test_rotation_from_the_generated_key_to_an_explicit_one(client_factory: ClientFactory) -> None:
    generated = await admin_client(client_factory)
    ws = await make_ws(generated)
    await put_secret(generated, ws, "W", "w-value")
    old_key = key_file(generated).read_text().strip()
    explicit = await admin_client(
        client_factory, SECRETS_ENCRYPTION_KEY=KEY_B, SECRETS_ENCRYPTION_KEY_PREVIOUS=f"{old_key}, {KEY_A}"
    )
    assert await values(explicit, ws) == (200, {"W": "w-value"})
    only_b = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_B)
    assert await values(only_b, ws) == (200, {"W": "w-value"})


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_", "MOLECULE_", "DATA_DIR"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/db/ws.db")
    return subprocess.run(
        [sys.executable, "-m", "workspace_server", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_migrate_generates_the_key_and_refuses_without_it(tmp_path: Path) -> None:
    done = _cli(tmp_path, "migrate")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "db" / "secrets.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() not in done.stderr + done.stdout  # the key is never printed
    # an encrypted row, then the key file lost: a clean refusal, no traceback, no new key
    import sqlite3

    with sqlite3.connect(tmp_path / "db" / "ws.db") as db:
        db.execute(
            "INSERT INTO global_secrets (id, key, encrypted_value, encryption_version) VALUES (?, ?, ?, 1)",
            ("00000000-0000-0000-0000-000000000001", "K", b"x" * 40),
        )
    path.unlink()
    done = _cli(tmp_path, "migrate")
    assert done.returncode == 1
    assert "secrets key file" in done.stderr and "Traceback" not in done.stderr
    assert not path.exists()
