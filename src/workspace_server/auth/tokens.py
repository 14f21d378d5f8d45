"""Workspace and org bearer tokens (spec 03 §1.1).

32 random bytes, base64url without padding (43 chars). Only sha256(plaintext) is stored; lookups go by
hash (a unique index), so comparison is an equality on a digest of fixed length, not on the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import org_api_tokens, workspace_auth_tokens, workspaces
from workspace_server.workspaces.status import Status

LAST_USED_RESOLUTION = timedelta(seconds=60)


def generate_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def issue_workspace_token(conn: AsyncConnection, ws_id: str) -> str:
    token = generate_token()
    await conn.execute(
        sa.insert(workspace_auth_tokens).values(
            id=new_id(),
            workspace_id=ws_id,
            token_hash=hash_token(token),
            prefix=token[:8],
            created_at=utcnow(),
        )
    )
    return token


# Checked on every authenticated agent call (each heartbeat): built once, bound per request.
_WS_TOKEN_LOOKUP = (
    sa.select(
        workspace_auth_tokens.c.id, workspace_auth_tokens.c.workspace_id, workspace_auth_tokens.c.last_used_at
    )
    .select_from(
        workspace_auth_tokens.join(workspaces, workspaces.c.id == workspace_auth_tokens.c.workspace_id)
    )
    .where(
        workspace_auth_tokens.c.token_hash == sa.bindparam("p_hash"),
        workspace_auth_tokens.c.revoked_at.is_(None),
        workspaces.c.status != Status.REMOVED,
    )
)
_WS_TOKEN_TOUCH = (
    sa.update(workspace_auth_tokens)
    .where(workspace_auth_tokens.c.id == sa.bindparam("p_id"))
    .values(last_used_at=sa.bindparam("p_now"))
)


async def validate_workspace_token(conn: AsyncConnection, token: str, ws_id: str | None = None) -> str | None:
    """Workspace id the token belongs to, if live and its workspace is not removed (and matches ws_id)."""
    if not token:
        return None
    row = (await conn.execute(_WS_TOKEN_LOOKUP, {"p_hash": hash_token(token)})).first()
    if row is None or (ws_id is not None and row.workspace_id != ws_id):
        return None
    now = utcnow()
    # last_used_at is informational: refresh it at most once a minute instead of on every heartbeat
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        await conn.execute(_WS_TOKEN_TOUCH, {"p_id": row.id, "p_now": now})
    return str(row.workspace_id)


async def has_live_token(conn: AsyncConnection, ws_id: str) -> bool:
    t = workspace_auth_tokens
    q = sa.select(t.c.id).where(t.c.workspace_id == ws_id, t.c.revoked_at.is_(None)).limit(1)
    return (await conn.execute(q)).first() is not None


async def any_live_token(conn: AsyncConnection) -> bool:
    t = workspace_auth_tokens
    return (
        await conn.execute(sa.select(t.c.id).where(t.c.revoked_at.is_(None)).limit(1))
    ).first() is not None


async def revoke_workspace_tokens(conn: AsyncConnection, ws_ids: list[str]) -> None:
    if not ws_ids:
        return
    t = workspace_auth_tokens
    await conn.execute(
        sa.update(t).where(t.c.workspace_id.in_(ws_ids), t.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    )


@dataclass(frozen=True)
class OrgToken:
    id: str
    prefix: str
    org_id: str | None


async def validate_org_token(conn: AsyncConnection, token: str) -> OrgToken | None:
    if not token:
        return None
    t = org_api_tokens
    row = (
        await conn.execute(
            sa.select(t.c.id, t.c.prefix, t.c.org_id).where(
                t.c.token_hash == hash_token(token), t.c.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None:
        return None
    await conn.execute(sa.update(t).where(t.c.id == row.id).values(last_used_at=utcnow()))
    return OrgToken(id=str(row.id), prefix=row.prefix, org_id=row.org_id)
