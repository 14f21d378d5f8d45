"""Crypto InitStrict (spec 06 §2.1 item 3): production refuses to start without a valid key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ClientFactory
from tests.integration.secrets_support import ADMIN_H, KEY_A, admin_client, make_ws, ws_rows
from workspace_server.secrets.crypto import EncryptionKeyRequired

ALNUM_32 = "abcdefghijklmnopqrstuvwxyz012345"  # valid base64 of 24 bytes: not a key


@pytest.mark.parametrize(
    ("env", "key"),
    [("production", ""), ("prod", ALNUM_32), ("  PROD  ", "c2hvcnQ="), ("Production", "short")],
)
async def test_app_refuses_to_start_in_production_without_key(
    client_factory: ClientFactory, env: str, key: str
) -> None:
    with pytest.raises(EncryptionKeyRequired) as err:
        await client_factory(MOLECULE_ENV=env, SECRETS_ENCRYPTION_KEY=key)
    msg = str(err.value)
    assert "SECRETS_ENCRYPTION_KEY" in msg and "base64" in msg and "32" in msg
    if key:
        assert key not in msg


async def test_production_with_a_key_starts_and_encrypts(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory, MOLECULE_ENV="production", SECRETS_ENCRYPTION_KEY=KEY_A)
    ws = await make_ws(client)
    r = await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    assert r.status_code == 200
    assert [row.encryption_version for row in await ws_rows(client, ws)] == [1]


@pytest.mark.parametrize("env", ["staging", "", "development"])
async def test_other_environments_start_without_key(client_factory: ClientFactory, env: str) -> None:
    # without a key they encrypt under the generated one (issue 11 §1; test_secrets_key_file.py)
    client = await admin_client(client_factory, MOLECULE_ENV=env)
    ws = await make_ws(client)
    # a value long enough that random ciphertext cannot contain it by chance (a single byte did, 1 in 15)
    value = "plaintext-that-must-not-be-stored"
    await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": value}, headers=ADMIN_H)
    (row,) = await ws_rows(client, ws)
    assert row.encryption_version == 1 and value.encode() not in bytes(row.encrypted_value)


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRETS_ENCRYPTION_KEY", "MOLECULE_ENV")}
    base.update(DATABASE_URL=f"sqlite:///{tmp_path}/db/ws.db", PORT="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "workspace_server", "serve"],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_exits_non_zero_before_migrating(tmp_path: Path) -> None:
    done = _serve(tmp_path, MOLECULE_ENV="production")
    assert done.returncode != 0
    assert "SECRETS_ENCRYPTION_KEY" in done.stderr and "base64 of exactly 32" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "db").exists()  # refused before touching the database
