"""Shared helpers for the registry integration tests (no tests of its own)."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from workspace_server.auth import tokens
from workspace_server.common.ids import new_id
from workspace_server.context import AppContext
from workspace_server.db.schema import structure_events, workspace_auth_tokens, workspaces
from workspace_server.events.bus import Event
from workspace_server.workspaces.store import insert_workspace

TREE_NAMES = ("PM", "DevLead", "FE", "BE", "SecAud", "Marketing", "Ops")
TREE_PARENTS = {
    "PM": None,
    "DevLead": "PM",
    "FE": "DevLead",
    "BE": "DevLead",
    "SecAud": "BE",
    "Marketing": "PM",
    "Ops": None,
}
# spec 03 §2 example tree
ALLOWED_PAIRS = [
    ("FE", "BE"),
    ("BE", "FE"),
    ("PM", "Ops"),
    ("Ops", "PM"),
    ("PM", "SecAud"),
    ("SecAud", "PM"),
    ("DevLead", "Marketing"),
    ("Marketing", "DevLead"),
    ("BE", "SecAud"),
    ("SecAud", "BE"),
    ("PM", "DevLead"),
    ("DevLead", "PM"),
    ("DevLead", "SecAud"),
    ("FE", "FE"),
]
DENIED_PAIRS = [
    ("FE", "SecAud"),
    ("SecAud", "FE"),
    ("FE", "Marketing"),
    ("Marketing", "FE"),
    ("DevLead", "Ops"),
    ("Ops", "DevLead"),
    ("FE", "Ops"),
    ("Ops", "SecAud"),
]


def ctx_of(client: httpx.AsyncClient) -> AppContext:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    return ctx


async def add_workspace(ctx: AppContext, name: str = "ws", **columns: Any) -> str:
    ws_id = columns.pop("id", None) or new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name=name, **columns)
    return ws_id


async def build_tree(ctx: AppContext, status: str = "online") -> dict[str, str]:
    ids: dict[str, str] = {}
    for name in TREE_NAMES:  # parents come first in TREE_NAMES
        parent = TREE_PARENTS[name]
        ids[name] = await add_workspace(
            ctx, name, status=status, parent_id=ids[parent] if parent else None, role=f"{name} role"
        )
    return ids


async def mint_token(ctx: AppContext, ws_id: str) -> str:
    async with ctx.engine.begin() as conn:
        return await tokens.issue_workspace_token(conn, ws_id)


async def row(ctx: AppContext, ws_id: str) -> Any:
    async with ctx.engine.connect() as conn:
        return (await conn.execute(sa.select(workspaces).where(workspaces.c.id == ws_id))).first()


async def set_columns(ctx: AppContext, ws_id: str, **values: Any) -> None:
    async with ctx.engine.begin() as conn:
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == ws_id).values(**values))


async def recorded_events(ctx: AppContext, ws_id: str | None = None) -> list[tuple[str, Any]]:
    q = sa.select(structure_events.c.event_type, structure_events.c.payload).order_by(
        structure_events.c.created_at, structure_events.c.id
    )
    if ws_id is not None:
        q = q.where(structure_events.c.workspace_id == ws_id)
    async with ctx.engine.connect() as conn:
        return [(r.event_type, r.payload) for r in (await conn.execute(q)).all()]


async def token_count(ctx: AppContext, ws_id: str) -> int:
    t = workspace_auth_tokens
    async with ctx.engine.connect() as conn:
        q = sa.select(sa.func.count()).select_from(t).where(t.c.workspace_id == ws_id)
        return int((await conn.execute(q)).scalar_one())


class Captured:
    """Every event published on the bus (recorded and broadcast-only alike)."""

    def __init__(self, ctx: AppContext) -> None:
        self.events: list[Event] = []
        ctx.bus.add_listener(self.events.append)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events if e.event == event_type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
