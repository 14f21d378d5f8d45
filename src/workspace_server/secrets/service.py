"""Secrets rules (spec 05 §1): scopes, the merge, decrypt-or-refuse, and restart-on-change.

Values never reach a log line or an exception message: failures are logged with the key name and the
exception's class only, because driver errors quote statement parameters (the plaintext when encryption
is off). List routes never carry values; only `/secrets/values` and `env_for_workspace` decrypt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.common.errors import ApiError
from workspace_server.common.time import rfc3339
from workspace_server.config import Settings
from workspace_server.context import AppContext, RestartHook
from workspace_server.secrets import store
from workspace_server.secrets.crypto import DecryptError, SecretsCrypto, crypto_for
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(__name__)

RESTARTS_GROUP = "secrets-restart"  # the task supervisor group of restarts after a secret change
MODEL_KEY = "MODEL_PROVIDER"


class SecretDecryptError(Exception):
    """A stored secret of `scope` ("global" | "workspace") cannot be decrypted; provisioning must abort."""

    def __init__(self, scope: str, keys: list[str]) -> None:
        super().__init__(f"failed to decrypt {scope} secret")
        self.scope = scope
        self.keys = keys  # names only, for logs; never values


def _log_failure(what: str, exc: BaseException) -> None:
    # the class only: SQLAlchemy error text embeds bound parameters, i.e. possibly the plaintext value
    log.error("%s failed: %s", what, type(exc).__name__)


def _decrypt_all(
    crypto: SecretsCrypto, rows: Iterable[store.StoredSecret]
) -> tuple[dict[str, str], list[str]]:
    """(plaintext by key, keys that failed). Every row is tried so the failure list is complete."""
    out: dict[str, str] = {}
    failed: list[str] = []
    for row in rows:
        try:
            out[row.key] = crypto.decrypt(row.value, row.version).decode("utf-8", errors="replace")
        except DecryptError as exc:
            log.error("decrypting secret %r (encryption_version=%d) failed: %s", row.key, row.version, exc)
            failed.append(row.key)
    return out, failed


async def _load_scopes(
    engine: AsyncEngine, ws_id: str
) -> tuple[list[store.StoredSecret], list[store.StoredSecret]]:
    async with engine.connect() as conn:
        return await store.global_values(conn), await store.workspace_values(conn, ws_id)


async def env_for_workspace(engine: AsyncEngine, settings: Settings, ws_id: str) -> dict[str, str]:
    """Globals, then the workspace's own secrets over them, decrypted: the container env of spec 02 §2.

    Raises SecretDecryptError (globals are checked first) rather than returning a partial set: an agent
    booted without some of its keys fails later in ways nobody can trace (spec 05 §12).
    """
    crypto = crypto_for(settings)
    global_rows, ws_rows = await _load_scopes(engine, ws_id)
    globals_, failed = _decrypt_all(crypto, global_rows)
    if failed:
        raise SecretDecryptError("global", failed)
    own, failed = _decrypt_all(crypto, ws_rows)
    if failed:
        raise SecretDecryptError("workspace", failed)
    return {**globals_, **own}


async def secret_keys(engine: AsyncEngine, ws_id: str) -> list[str]:
    """Sorted union of global and workspace key names (the restart context lists them; no values)."""
    async with engine.connect() as conn:
        keys = {r.key for r in await store.global_listing(conn)}
        keys |= {r.key for r in await store.workspace_listing(conn, ws_id)}
    return sorted(keys)


# ---- restart on change ----


def _restartable(tree: dict[str, store.WorkspaceNode], ws_id: str) -> bool:
    """Not removed/paused/hibernated, not external, and no paused ancestor (cycle-safe walk)."""
    node = tree.get(ws_id)
    if node is None or node.status in store.NO_RESTART_STATUSES or node.runtime == "external":
        return False
    seen = {ws_id}
    parent = node.parent_id
    while parent and parent not in seen:
        seen.add(parent)
        up = tree.get(parent)
        if up is None:
            break
        if up.status == Status.PAUSED:
            return False
        parent = up.parent_id
    return True


async def _restart(hook: RestartHook, ws_id: str) -> None:
    try:
        await hook(ws_id)
    except Exception as exc:  # fire-and-forget: a failed restart must not surface anywhere else
        _log_failure(f"restart of {ws_id} after a secret change", exc)


def _fire(ctx: AppContext, ids: list[str]) -> None:
    hook = ctx.restart_hook
    if hook is None or not ids:
        return
    for ws_id in ids:
        ctx.tasks.spawn(f"secrets-restart:{ws_id}", _restart(hook, ws_id), group=RESTARTS_GROUP)


async def drain_restarts(ctx: AppContext) -> None:
    """Wait for restarts already fired (shutdown and tests)."""
    await ctx.tasks.wait(RESTARTS_GROUP)


async def _restart_targets(
    ctx: AppContext, *, ws_id: str | None = None, global_key: str | None = None
) -> list[str]:
    async with ctx.engine.connect() as conn:
        tree = await store.workspace_tree(conn)
        if ws_id is not None:
            return [ws_id] if _restartable(tree, ws_id) else []
        shadowed = await store.overriding_workspaces(conn, global_key or "")
    return [i for i in sorted(tree) if i not in shadowed and _restartable(tree, i)]


async def restart_after_change(
    ctx: AppContext, *, ws_id: str | None = None, global_key: str | None = None
) -> None:
    """Fire restarts for the workspaces whose env just changed; the change itself is already committed."""
    if ctx.restart_hook is None:
        return
    try:
        ids = await _restart_targets(ctx, ws_id=ws_id, global_key=global_key)
    except Exception as exc:
        _log_failure("listing workspaces to restart after a secret change", exc)
        return
    if global_key is not None and ids:
        log.info("global secret %r changed: restarting %d workspace(s) to refresh env", global_key, len(ids))
    _fire(ctx, ids)


# ---- routes' work ----


def _listing_entry(row: Any, scope: str) -> dict[str, Any]:
    # keys sorted, as the reference's gin.H maps marshal
    return {
        "created_at": rfc3339(row.created_at),
        "has_value": True,
        "key": row.key,
        "scope": scope,
        "updated_at": rfc3339(row.updated_at),
    }


async def list_workspace(ctx: AppContext, ws_id: str) -> list[dict[str, Any]]:
    try:
        async with ctx.engine.connect() as conn:
            own = await store.workspace_listing(conn, ws_id)
    except Exception as exc:
        _log_failure(f"listing secrets of {ws_id}", exc)
        raise ApiError(500, "query failed") from None
    out = [_listing_entry(r, "workspace") for r in own]
    try:
        async with ctx.engine.connect() as conn:
            globals_ = await store.global_listing(conn)
    except Exception as exc:  # the reference answers with the workspace rows alone
        _log_failure("listing global secrets", exc)
        return out
    mine = {r.key for r in own}
    return out + [_listing_entry(r, "global") for r in globals_ if r.key not in mine]


async def values(ctx: AppContext, ws_id: str) -> dict[str, str]:
    try:
        global_rows, ws_rows = await _load_scopes(ctx.engine, ws_id)
    except Exception as exc:
        _log_failure(f"loading secrets of {ws_id}", exc)
        raise ApiError(500, "query failed") from None
    crypto = crypto_for(ctx.settings)
    globals_, g_failed = _decrypt_all(crypto, global_rows)
    own, w_failed = _decrypt_all(crypto, ws_rows)
    failed = [f"global:{k}" for k in g_failed] + [f"workspace:{k}" for k in w_failed]
    if failed:
        raise ApiError(
            500,
            "one or more secrets failed to decrypt; refusing to return partial bundle",
            failed_keys=failed,
        )
    merged = {**globals_, **own}
    return {k: merged[k] for k in sorted(merged)}


def _encrypt(ctx: AppContext, value: str, error: str, what: str) -> tuple[bytes, int]:
    try:
        return crypto_for(ctx.settings).encrypt(value.encode("utf-8"))
    except Exception as exc:
        _log_failure(f"encrypting {what}", exc)
        raise ApiError(500, error) from None


async def _save_workspace_secret(
    ctx: AppContext, ws_id: str, key: str, value: str, errors: tuple[str, str]
) -> None:
    """Encrypt and upsert; `errors` = (encrypt failure message, save failure message)."""
    stored, version = _encrypt(ctx, value, errors[0], f"secret {key!r} of {ws_id}")
    try:
        async with ctx.engine.begin() as conn:
            if not await workspace_exists(conn, ws_id):
                raise ApiError(404, "workspace not found")
            await store.upsert_workspace_secret(conn, ws_id, key, stored, version)
    except ApiError:
        raise
    except Exception as exc:
        _log_failure(f"saving secret {key!r} of {ws_id}", exc)
        raise ApiError(500, errors[1]) from None


async def set_workspace_secret(ctx: AppContext, ws_id: str, key: str, value: str) -> dict[str, str]:
    await _save_workspace_secret(
        ctx, ws_id, key, value, ("failed to encrypt secret", "failed to save secret")
    )
    await restart_after_change(ctx, ws_id=ws_id)
    return {"key": key, "status": "saved"}


async def _delete_workspace_row(ctx: AppContext, ws_id: str, key: str, error: str) -> int:
    try:
        async with ctx.engine.begin() as conn:
            return await store.delete_workspace_secret(conn, ws_id, key)
    except Exception as exc:
        _log_failure(f"deleting secret {key!r} of {ws_id}", exc)
        raise ApiError(500, error) from None


async def delete_workspace_secret(ctx: AppContext, ws_id: str, key: str) -> dict[str, str]:
    if not await _delete_workspace_row(ctx, ws_id, key, "failed to delete secret"):
        raise ApiError(404, "secret not found")
    await restart_after_change(ctx, ws_id=ws_id)
    return {"key": key, "status": "deleted"}


async def get_model(ctx: AppContext, ws_id: str) -> dict[str, str]:
    try:
        async with ctx.engine.connect() as conn:
            row = await store.workspace_secret(conn, ws_id, MODEL_KEY)
    except Exception as exc:
        _log_failure(f"reading the model of {ws_id}", exc)
        raise ApiError(500, "query failed") from None
    if row is None:
        return {"model": "", "source": "default"}
    try:
        model = crypto_for(ctx.settings).decrypt(row.value, row.version).decode("utf-8", errors="replace")
    except DecryptError as exc:
        log.error("decrypting the model of %s failed: %s", ws_id, exc)
        raise ApiError(500, "failed to decrypt") from None
    return {"model": model, "source": "workspace_secrets"}


async def set_model(ctx: AppContext, ws_id: str, model: str) -> dict[str, str]:
    if model == "":
        await _delete_workspace_row(ctx, ws_id, MODEL_KEY, "failed to clear model")
        result = {"status": "cleared"}
    else:
        await _save_workspace_secret(
            ctx, ws_id, MODEL_KEY, model, ("failed to encrypt model", "failed to save model")
        )
        result = {"model": model, "status": "saved"}
    await restart_after_change(ctx, ws_id=ws_id)
    return result


# ---- global scope ----


async def list_global(ctx: AppContext) -> list[dict[str, Any]]:
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.global_listing(conn)
    except Exception as exc:
        _log_failure("listing global secrets", exc)
        raise ApiError(500, "query failed") from None
    return [_listing_entry(r, "global") for r in rows]


async def set_global_secret(ctx: AppContext, key: str, value: str) -> dict[str, str]:
    stored, version = _encrypt(ctx, value, "failed to encrypt", f"global secret {key!r}")
    try:
        async with ctx.engine.begin() as conn:
            await store.upsert_global_secret(conn, key, stored, version)
    except Exception as exc:
        _log_failure(f"saving global secret {key!r}", exc)
        raise ApiError(500, "failed to save") from None
    await restart_after_change(ctx, global_key=key)
    return {"key": key, "scope": "global", "status": "saved"}


async def delete_global_secret(ctx: AppContext, key: str) -> dict[str, str]:
    try:
        async with ctx.engine.begin() as conn:
            deleted = await store.delete_global_secret(conn, key)
    except Exception as exc:
        _log_failure(f"deleting global secret {key!r}", exc)
        raise ApiError(500, "failed to delete") from None
    if not deleted:
        raise ApiError(404, "secret not found")
    await restart_after_change(ctx, global_key=key)
    return {"key": key, "scope": "global", "status": "deleted"}
