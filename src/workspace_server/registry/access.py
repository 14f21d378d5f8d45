"""Who may talk to whom: the org-chart rule (spec 03 §2, `CanCommunicate`).

Allowed, in order: same id; siblings (same non-null parent); both roots; parent↔child; any
ancestor↔descendant (walk ≤32 steps, a cycle guard). Unknown ids and lookup errors deny. Status is
ignored. One recursive query fetches both parent chains, since this runs per WebSocket event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workspace_server.db.schema import workspaces

log = logging.getLogger(__name__)

MAX_ANCESTOR_STEPS = 32


@dataclass(frozen=True)
class Chain:
    """A workspace's parent and its ancestors nearest-first (at most MAX_ANCESTOR_STEPS of them)."""

    parent_id: str | None
    ancestors: tuple[str, ...]


def _chains_query(ids: list[str]) -> sa.Select[Any]:
    w = workspaces
    start = (
        sa.select(
            w.c.id.label("origin"),
            w.c.parent_id.label("next_id"),
            sa.literal(0).label("depth"),
        )
        .where(w.c.id.in_(ids))
        .cte("chain", recursive=True)
    )
    step = (
        sa.select(start.c.origin, w.c.parent_id, start.c.depth + 1)
        .select_from(start.join(w, w.c.id == start.c.next_id))
        .where(start.c.depth < MAX_ANCESTOR_STEPS - 1)
    )
    chain = start.union_all(step)
    return sa.select(chain.c.origin, chain.c.next_id, chain.c.depth).order_by(chain.c.origin, chain.c.depth)


async def fetch_chains(conn: AsyncConnection, ids: list[str]) -> dict[str, Chain]:
    """Parent chains of `ids` that exist; an id absent from the result does not exist."""
    steps: dict[str, list[str | None]] = {}
    for origin, next_id, _depth in (await conn.execute(_chains_query(ids))).all():
        steps.setdefault(origin, []).append(next_id)
    out: dict[str, Chain] = {}
    for origin, hops in steps.items():
        parent = hops[0]
        ancestors = tuple(h for h in hops if h is not None)
        out[origin] = Chain(parent_id=parent, ancestors=ancestors)
    return out


def decide(caller: str, target: str, chains: dict[str, Chain]) -> bool:
    """The seven rules over pre-fetched chains (pure, so callers may cache chains)."""
    if caller == target:
        return True
    a, b = chains.get(caller), chains.get(target)
    if a is None or b is None:
        return False
    if a.parent_id is not None and a.parent_id == b.parent_id:
        return True
    if a.parent_id is None and b.parent_id is None:
        return True
    if b.parent_id == caller or a.parent_id == target:
        return True
    return caller in b.ancestors or target in a.ancestors


async def can_communicate(db: AsyncConnection | AsyncEngine, caller: str, target: str) -> bool:
    if caller == target:  # rule 1 needs no lookup, even for an unknown id
        return True
    try:
        if isinstance(db, AsyncEngine):
            async with db.connect() as conn:
                chains = await fetch_chains(conn, [caller, target])
        else:
            chains = await fetch_chains(db, [caller, target])
    except Exception:
        log.exception("hierarchy lookup failed; denying %s -> %s", caller, target)
        return False
    return decide(caller, target, chains)
