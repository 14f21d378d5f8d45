"""CanCommunicate against the database (spec 03 §2): example tree, removed rows, walk bound, cycles."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.registry_support import (
    ALLOWED_PAIRS,
    DENIED_PAIRS,
    add_workspace,
    build_tree,
    ctx_of,
    set_columns,
)
from workspace_server.common.ids import new_id
from workspace_server.db.schema import workspaces
from workspace_server.registry.access import MAX_ANCESTOR_STEPS, can_communicate


async def test_example_tree(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    for caller, target in ALLOWED_PAIRS:
        assert await can_communicate(ctx.engine, ids[caller], ids[target]), (caller, target)
    for caller, target in DENIED_PAIRS:
        assert not await can_communicate(ctx.engine, ids[caller], ids[target]), (caller, target)
    async with ctx.engine.connect() as conn:  # also accepts a connection
        assert await can_communicate(conn, ids["FE"], ids["BE"])
        assert not await can_communicate(conn, ids["FE"], ids["SecAud"])


async def test_unknown_ids_deny_and_self_is_allowed(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    ghost = new_id()
    assert not await can_communicate(ctx.engine, ids["PM"], ghost)
    assert not await can_communicate(ctx.engine, ghost, ids["Ops"])  # two "roots", but one is unknown
    assert not await can_communicate(ctx.engine, "not-a-uuid", ids["Ops"])
    assert await can_communicate(ctx.engine, ghost, ghost)


async def test_status_is_ignored(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await build_tree(ctx)
    await set_columns(ctx, ids["DevLead"], status="removed")
    assert await can_communicate(ctx.engine, ids["PM"], ids["SecAud"])
    assert await can_communicate(ctx.engine, ids["FE"], ids["BE"])


async def _chain(client: httpx.AsyncClient, length: int) -> list[str]:
    ctx = ctx_of(client)
    ids: list[str] = []
    for i in range(length):
        ids.append(await add_workspace(ctx, f"n{i}", parent_id=ids[-1] if ids else None))
    return ids


async def test_ancestor_walk_is_bounded(client: httpx.AsyncClient) -> None:
    ctx = ctx_of(client)
    ids = await _chain(client, MAX_ANCESTOR_STEPS + 3)
    leaf = ids[-1]
    in_reach = ids[-1 - MAX_ANCESTOR_STEPS]  # exactly 32 steps up
    beyond = ids[-2 - MAX_ANCESTOR_STEPS]  # 33 steps up
    assert await can_communicate(ctx.engine, in_reach, leaf)
    assert await can_communicate(ctx.engine, leaf, in_reach)
    assert not await can_communicate(ctx.engine, beyond, leaf)
    assert not await can_communicate(ctx.engine, leaf, beyond)


@pytest.mark.parametrize("cycle_len", [2, 3])
async def test_parent_cycle_terminates(client: httpx.AsyncClient, cycle_len: int) -> None:
    ctx = ctx_of(client)
    ids = await _chain(client, cycle_len)
    async with ctx.engine.begin() as conn:  # close the loop: root's parent is the last node
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == ids[0]).values(parent_id=ids[-1]))
    outsider = await add_workspace(ctx, "outsider")
    assert not await can_communicate(ctx.engine, ids[-1], outsider)
    assert await can_communicate(ctx.engine, ids[0], ids[-1])
