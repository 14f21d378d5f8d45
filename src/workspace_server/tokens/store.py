"""SQL for the token-management routes. Issuing/validating lives in `auth/tokens.py`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.auth.tokens import generate_token, hash_token
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import org_api_tokens, workspace_auth_tokens, workspaces

PREFIX_LEN = 8


async def lock_workspace_status(conn: AsyncConnection, ws_id: str) -> str | None:
    """The workspace's status, row-locked on Postgres so concurrent mints count one at a time."""
    q = sa.select(workspaces.c.status).where(workspaces.c.id == ws_id).with_for_update()
    return (await conn.execute(q)).scalar_one_or_none()


async def count_live_workspace_tokens(conn: AsyncConnection, ws_id: str) -> int:
    t = workspace_auth_tokens
    q = sa.select(sa.func.count()).select_from(t).where(t.c.workspace_id == ws_id, t.c.revoked_at.is_(None))
    return int((await conn.execute(q)).scalar_one())


async def list_workspace_tokens(conn: AsyncConnection, ws_id: str, limit: int, offset: int) -> list[Any]:
    t = workspace_auth_tokens
    q = (
        sa.select(t.c.id, t.c.prefix, t.c.created_at, t.c.last_used_at)
        .where(t.c.workspace_id == ws_id, t.c.revoked_at.is_(None))
        .order_by(t.c.created_at.desc(), t.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list((await conn.execute(q)).all())


async def revoke_workspace_token(conn: AsyncConnection, ws_id: str, token_id: str) -> bool:
    """True if a live token with this id belonging to `ws_id` was revoked now."""
    t = workspace_auth_tokens
    stmt = (
        sa.update(t)
        .where(t.c.id == token_id, t.c.workspace_id == ws_id, t.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return (await conn.execute(stmt)).rowcount > 0


async def insert_org_token(
    conn: AsyncConnection, *, name: str | None, created_by: str | None, org_id: str | None
) -> tuple[str, str]:
    """Mint an org token; returns (id, plaintext). Only sha256(plaintext) is stored."""
    token, token_id = generate_token(), new_id()
    await conn.execute(
        sa.insert(org_api_tokens).values(
            id=token_id,
            token_hash=hash_token(token),
            prefix=token[:PREFIX_LEN],
            name=name or None,
            created_by=created_by or None,
            org_id=org_id or None,
            created_at=utcnow(),
        )
    )
    return token_id, token


async def list_org_tokens(conn: AsyncConnection, limit: int) -> list[Any]:
    t = org_api_tokens
    q = (
        sa.select(t.c.id, t.c.prefix, t.c.name, t.c.org_id, t.c.created_by, t.c.created_at, t.c.last_used_at)
        .where(t.c.revoked_at.is_(None))
        .order_by(t.c.created_at.desc(), t.c.id.desc())
        .limit(limit)
    )
    return list((await conn.execute(q)).all())


async def revoke_org_token(conn: AsyncConnection, token_id: str) -> bool:
    t = org_api_tokens
    stmt = sa.update(t).where(t.c.id == token_id, t.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    return (await conn.execute(stmt)).rowcount > 0
