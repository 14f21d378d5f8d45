"""SQL of `workspace_channels` (configs go in and come out as stored: encryption is configcrypt's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspace_channels as t


async def list_for_workspace(engine: AsyncEngine, ws_id: str) -> list[Row[Any]]:
    q = sa.select(t).where(t.c.workspace_id == ws_id).order_by(t.c.created_at, t.c.id)
    async with engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def get(engine: AsyncEngine, channel_id: str, ws_id: str | None = None) -> Row[Any] | None:
    q = sa.select(t).where(t.c.id == channel_id)
    if ws_id is not None:  # scoped: a channel of another workspace is "not found" (no IDOR)
        q = q.where(t.c.workspace_id == ws_id)
    async with engine.connect() as conn:
        return (await conn.execute(q)).first()


async def enabled_of_type(engine: AsyncEngine, channel_type: str | None = None) -> list[Row[Any]]:
    q = sa.select(t).where(t.c.enabled.is_(True)).order_by(t.c.created_at, t.c.id)
    if channel_type is not None:
        q = q.where(t.c.channel_type == channel_type)
    async with engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def insert(engine: AsyncEngine, values: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t).values(**values))


async def update(engine: AsyncEngine, channel_id: str, ws_id: str, values: dict[str, Any]) -> int:
    q = sa.update(t).where(t.c.id == channel_id, t.c.workspace_id == ws_id)
    async with engine.begin() as conn:
        return int((await conn.execute(q.values(**values, updated_at=utcnow()))).rowcount)


async def delete(engine: AsyncEngine, channel_id: str, ws_id: str) -> int:
    q = sa.delete(t).where(t.c.id == channel_id, t.c.workspace_id == ws_id)
    async with engine.begin() as conn:
        return int((await conn.execute(q)).rowcount)


async def claim_message(engine: AsyncEngine, channel_id: str, now: datetime) -> bool:
    """Count one message against the channel's budget in one statement, so concurrent sends cannot pass
    a full budget together; False when the budget is spent (the row's count is left alone)."""
    within = sa.or_(t.c.channel_budget.is_(None), t.c.message_count < t.c.channel_budget)
    q = (
        sa.update(t)
        .where(t.c.id == channel_id, within)
        .values(message_count=t.c.message_count + 1, last_message_at=now)
    )
    async with engine.begin() as conn:
        return int((await conn.execute(q)).rowcount) == 1


async def release_message(engine: AsyncEngine, channel_id: str) -> None:
    """Give back a claimed message that was not delivered."""
    q = (
        sa.update(t)
        .where(t.c.id == channel_id, t.c.message_count > 0)
        .values(message_count=t.c.message_count - 1)
    )
    async with engine.begin() as conn:
        await conn.execute(q)


async def disable(engine: AsyncEngine, channel_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(t).where(t.c.id == channel_id).values(enabled=False, updated_at=utcnow())
        )


async def all_configs(engine: AsyncEngine) -> list[Row[Any]]:
    q = sa.select(t).order_by(t.c.id)
    async with engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def set_config(
    engine: AsyncEngine, channel_id: str, config: dict[str, Any], was: dict[str, Any]
) -> None:
    """Compare-and-set: a config a route replaced meanwhile is left as the route wrote it."""
    q = sa.select(t.c.channel_config).where(t.c.id == channel_id)
    async with engine.begin() as conn:
        if (await conn.execute(q.with_for_update())).scalar_one_or_none() == was:
            await conn.execute(sa.update(t).where(t.c.id == channel_id).values(channel_config=config))
