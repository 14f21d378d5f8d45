"""Secrets at rest: real AES-GCM with a key, plaintext rows from before the key, a wrong key failing loud,
the provisioning env (`env_for_workspace`) and that no value ever reaches a log line."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory
from tests.integration.secrets_support import (
    ADMIN_H,
    KEY_A,
    KEY_B,
    admin_client,
    ctx_of,
    global_rows,
    issue,
    make_ws,
    ws_rows,
)
from workspace_server.db.schema import global_secrets
from workspace_server.secrets import service, store
from workspace_server.secrets.crypto import EncryptionKeyRequired
from workspace_server.secrets.service import SecretDecryptError, env_for_workspace


async def test_values_round_trip_through_encryption(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    ws = await make_ws(client)
    await client.post("/settings/secrets", json={"key": "SHARED", "value": "global-v"}, headers=ADMIN_H)
    await client.post("/settings/secrets", json={"key": "ONLY_GLOBAL", "value": "g"}, headers=ADMIN_H)
    for key, value in (("SHARED", "ws-v"), ("UNICODE", "päss wörd ✓"), ("MULTI", "line1\nline2")):
        r = await client.post(f"/workspaces/{ws}/secrets", json={"key": key, "value": value}, headers=ADMIN_H)
        assert r.status_code == 200

    for row in [*await ws_rows(client, ws), *await global_rows(client)]:
        assert row.encryption_version == 1
        assert b"ws-v" not in bytes(row.encrypted_value) and b"global-v" not in bytes(row.encrypted_value)
        assert len(bytes(row.encrypted_value)) >= 12 + 16  # nonce + tag

    tok = await issue(client, ws)
    r = await client.get(f"/workspaces/{ws}/secrets/values", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    # globals, then the workspace over them; keys sorted as Go marshals a map
    assert r.text == ('{"MULTI":"line1\\nline2","ONLY_GLOBAL":"g","SHARED":"ws-v","UNICODE":"päss wörd ✓"}')
    env = await env_for_workspace(ctx_of(client).engine, ctx_of(client).settings, ws)
    assert env == {"MULTI": "line1\nline2", "ONLY_GLOBAL": "g", "SHARED": "ws-v", "UNICODE": "päss wörd ✓"}


async def test_plaintext_rows_are_encrypted_when_a_key_is_configured(client_factory: ClientFactory) -> None:
    # plaintext rows as a server without a key wrote them before issue 11 (it now generates one)
    plain = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY="not-a-key")  # malformed: plaintext
    ws = await make_ws(plain)
    await plain.post(f"/workspaces/{ws}/secrets", json={"key": "OLD", "value": "old-v"}, headers=ADMIN_H)
    await plain.post("/settings/secrets", json={"key": "G_OLD", "value": "g-old"}, headers=ADMIN_H)
    (row,) = await ws_rows(plain, ws)
    assert (bytes(row.encrypted_value), row.encryption_version) == (b"old-v", 0)

    # the start under a key encrypts them (secrets/atrest.py), and they read back
    keyed = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    assert [(x.key, x.encryption_version) for x in await ws_rows(keyed, ws)] == [("OLD", 1)]
    assert [(x.key, x.encryption_version) for x in await global_rows(keyed)] == [("G_OLD", 1)]
    assert b"old-v" not in bytes((await ws_rows(keyed, ws))[0].encrypted_value)
    await keyed.post(f"/workspaces/{ws}/secrets", json={"key": "NEW", "value": "new-v"}, headers=ADMIN_H)
    r = await keyed.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    assert (r.status_code, r.json()) == (200, {"G_OLD": "g-old", "NEW": "new-v", "OLD": "old-v"})


async def test_wrong_key_fails_loudly(client_factory: ClientFactory) -> None:
    under_a = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    ws = await make_ws(under_a)
    await under_a.post("/settings/secrets", json={"key": "G1", "value": "g"}, headers=ADMIN_H)
    await under_a.post(f"/workspaces/{ws}/secrets", json={"key": "W1", "value": "w"}, headers=ADMIN_H)
    await under_a.put(f"/workspaces/{ws}/model", json={"model": "m"}, headers=ADMIN_H)

    under_b = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_B)
    r = await under_b.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    assert r.status_code == 500
    assert r.json() == {
        "error": "one or more secrets failed to decrypt; refusing to return partial bundle",
        "failed_keys": ["global:G1", "workspace:MODEL_PROVIDER", "workspace:W1"],
    }
    r = await under_b.get(f"/workspaces/{ws}/model", headers=ADMIN_H)
    assert (r.status_code, r.json()) == (500, {"error": "failed to decrypt"})
    # listing never decrypts, so it still works
    r = await under_b.get(f"/workspaces/{ws}/secrets", headers=ADMIN_H)
    assert [e["key"] for e in r.json()] == ["MODEL_PROVIDER", "W1", "G1"]

    ctx = ctx_of(under_b)
    with pytest.raises(SecretDecryptError) as err:
        await env_for_workspace(ctx.engine, ctx.settings, ws)
    assert (str(err.value), err.value.scope, err.value.keys) == (
        "failed to decrypt global secret",
        "global",
        ["G1"],
    )

    # with the global gone, the workspace scope is the one that fails
    await under_b.delete("/settings/secrets/G1", headers=ADMIN_H)
    with pytest.raises(SecretDecryptError) as err:
        await env_for_workspace(ctx.engine, ctx.settings, ws)
    assert (str(err.value), err.value.keys) == (
        "failed to decrypt workspace secret",
        ["MODEL_PROVIDER", "W1"],
    )

    # encrypted rows and no key at all: also refused, never served as ciphertext
    keyless = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY="not-a-key")
    r = await keyless.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    assert r.status_code == 500 and r.json()["failed_keys"] == ["workspace:MODEL_PROVIDER", "workspace:W1"]
    # and with no key set, the server does not start (it would generate a second key): issue 11 §1
    with pytest.raises(EncryptionKeyRequired, match="secrets key file"):
        await admin_client(client_factory)


async def test_unknown_encryption_version_fails(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    ws = await make_ws(client)
    async with ctx_of(client).engine.begin() as conn:
        await store.upsert_global_secret(conn, "FUTURE", b"whatever", 7)
    r = await client.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    assert r.json()["failed_keys"] == ["global:FUTURE"]


async def test_env_for_workspace_empty_and_isolated(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    ws, other = await make_ws(client), await make_ws(client)
    ctx = ctx_of(client)
    assert await env_for_workspace(ctx.engine, ctx.settings, ws) == {}
    await client.post(f"/workspaces/{other}/secrets", json={"key": "THEIRS", "value": "x"}, headers=ADMIN_H)
    await client.post("/settings/secrets", json={"key": "EMPTY_OK", "value": " "}, headers=ADMIN_H)
    assert await env_for_workspace(ctx.engine, ctx.settings, ws) == {"EMPTY_OK": " "}
    assert await service.secret_keys(ctx.engine, other) == ["EMPTY_OK", "THEIRS"]


async def test_no_secret_value_in_logs(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    values = ["sk-live-VALUE-ws-123", "sk-live-VALUE-global-456", "model-VALUE-789", "plain-VALUE-000"]
    keyed = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=KEY_A)
    plain = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY="not-a-key")  # encryption off
    ws = await make_ws(keyed)
    await keyed.post(f"/workspaces/{ws}/secrets", json={"key": "A", "value": values[0]}, headers=ADMIN_H)
    await keyed.put("/settings/secrets", json={"key": "G", "value": values[1]}, headers=ADMIN_H)
    await keyed.put(f"/workspaces/{ws}/model", json={"model": values[2]}, headers=ADMIN_H)
    await plain.post(f"/workspaces/{ws}/secrets", json={"key": "P", "value": values[3]}, headers=ADMIN_H)
    await keyed.get(f"/workspaces/{ws}/secrets", headers=ADMIN_H)
    await keyed.get(f"/workspaces/{ws}/model", headers=ADMIN_H)
    r = await plain.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)  # fails: A/G/model need the key
    assert r.status_code == 500
    r = await keyed.get(f"/workspaces/{ws}/secrets/values", headers=ADMIN_H)
    assert r.status_code == 200 and set(r.json().values()) == set(values)
    ctx = ctx_of(keyed)
    assert set((await env_for_workspace(ctx.engine, ctx.settings, ws)).values()) == set(values)
    with pytest.raises(SecretDecryptError):
        await env_for_workspace(ctx_of(plain).engine, ctx_of(plain).settings, ws)

    logged = caplog.text + "".join(str(rec.args) for rec in caplog.records)
    assert "failed to decrypt" in logged or "decrypting secret" in logged  # the failures were logged…
    for v in values:
        assert v not in logged  # …without a single value


async def test_save_failure_is_500_and_keeps_value_out_of_logs(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await admin_client(client_factory)
    ws = await make_ws(client)

    async def failing_upsert(*args: Any, **kwargs: Any) -> None:
        raise sa.exc.OperationalError("INSERT …", {"encrypted_value": b"leaky-VALUE"}, Exception("db down"))

    monkeypatch.setattr(store, "upsert_workspace_secret", failing_upsert)
    monkeypatch.setattr(store, "upsert_global_secret", failing_upsert)
    r = await client.post(
        f"/workspaces/{ws}/secrets", json={"key": "K", "value": "leaky-VALUE"}, headers=ADMIN_H
    )
    assert (r.status_code, r.json()) == (500, {"error": "failed to save secret"})
    r = await client.put(f"/workspaces/{ws}/model", json={"model": "leaky-VALUE"}, headers=ADMIN_H)
    assert (r.status_code, r.json()) == (500, {"error": "failed to save model"})
    r = await client.post("/settings/secrets", json={"key": "K", "value": "leaky-VALUE"}, headers=ADMIN_H)
    assert (r.status_code, r.json()) == (500, {"error": "failed to save"})
    assert "OperationalError" in caplog.text
    assert "leaky-VALUE" not in caplog.text
    async with ctx_of(client).engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(global_secrets))).scalar() == 0
