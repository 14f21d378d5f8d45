"""A workspace's agent (spec 01 §3): assign, replace, remove, move; events; one active agent at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import ClientFactory
from tests.integration.registry_support import (
    add_workspace,
    bearer,
    build_tree,
    ctx_of,
    mint_token,
    recorded_events,
)
from workspace_server.common.ids import new_id
from workspace_server.context import AppContext
from workspace_server.db.schema import agents

ADMIN = "admin-secret"
AH = bearer(ADMIN)


async def setup(client_factory: ClientFactory) -> tuple[httpx.AsyncClient, AppContext, str]:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(client)
    return client, ctx, await add_workspace(ctx, "Dev", status="online")


async def agent_rows(ctx: AppContext, ws_id: str | None = None) -> list[Any]:
    q = sa.select(agents).order_by(agents.c.created_at, agents.c.id)
    if ws_id is not None:
        q = q.where(agents.c.workspace_id == ws_id)
    async with ctx.engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def test_assign_replace_remove(client_factory: ClientFactory) -> None:
    client, ctx, ws = await setup(client_factory)
    url = f"/workspaces/{ws}/agent"
    h = bearer(await mint_token(ctx, ws))

    r = await client.post(url, json={"model": "anthropic:claude-opus-4-7"}, headers=h)
    assert r.status_code == 201
    first = r.json()
    assert list(first) == ["agent_id", "model"] and first["model"] == "anthropic:claude-opus-4-7"
    r = await client.post(url, json={"model": "other"}, headers=h)
    assert (r.status_code, r.json()) == (
        409,
        {"error": "workspace already has an active agent, use PATCH to replace"},
    )

    r = await client.patch(url, json={"model": "sonnet"}, headers=h)
    assert r.status_code == 200
    second = r.json()
    assert second["model"] == "sonnet" and second["old_model"] == "anthropic:claude-opus-4-7"
    assert second["agent_id"] != first["agent_id"]

    r = await client.delete(url, headers=h)
    assert (r.status_code, r.json()) == (200, {"status": "removed", "agent_id": second["agent_id"]})
    r = await client.delete(url, headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "no active agent to remove"})
    r = await client.patch(url, json={"model": "x"}, headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "no active agent to replace"})

    rows = await agent_rows(ctx, ws)
    assert [(x.model, x.status, x.removal_reason) for x in rows] == [
        ("anthropic:claude-opus-4-7", "replaced", "model_replaced"),
        ("sonnet", "removed", "manual_removal"),
    ]
    assert all(x.removed_at is not None for x in rows)
    events = [e for e in await recorded_events(ctx, ws) if e[0].startswith("AGENT_")]
    assert events == [
        ("AGENT_ASSIGNED", {"agent_id": first["agent_id"], "model": "anthropic:claude-opus-4-7"}),
        (
            "AGENT_REPLACED",
            {"agent_id": second["agent_id"], "model": "sonnet", "old_model": "anthropic:claude-opus-4-7"},
        ),
        ("AGENT_REMOVED", {"agent_id": second["agent_id"], "model": "sonnet"}),
    ]


async def test_bad_input_and_unknown_workspaces(client_factory: ClientFactory) -> None:
    client, _, ws = await setup(client_factory)
    bad = (400, {"error": "invalid request body"})
    for body in ({}, {"model": ""}, {"model": 5}, [1], None):
        r = await client.post(f"/workspaces/{ws}/agent", json=body, headers=AH)
        assert (r.status_code, r.json()) == bad, body
    r = await client.post(f"/workspaces/{ws}/agent", content=b"{", headers=AH)
    assert (r.status_code, r.json()) == bad
    r = await client.post(f"/workspaces/{ws}/agent/move", json={"target_workspace_id": 3}, headers=AH)
    assert (r.status_code, r.json()) == bad
    r = await client.post(f"/workspaces/{new_id()}/agent", json={"model": "m"}, headers=AH)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    r = await client.post(f"/workspaces/{ws}/agent", json={"model": "m"})
    assert r.status_code == 401


async def test_move(client_factory: ClientFactory) -> None:
    client, ctx, source = await setup(client_factory)
    target = await add_workspace(ctx, "Target", status="online")
    busy = await add_workspace(ctx, "Busy", status="online")
    for ws, model in ((source, "m1"), (busy, "m2")):
        r = await client.post(f"/workspaces/{ws}/agent", json={"model": model}, headers=AH)
        assert r.status_code == 201
    agent_id = (await agent_rows(ctx, source))[0].id
    move = f"/workspaces/{source}/agent/move"

    r = await client.post(move, json={"target_workspace_id": busy}, headers=AH)
    assert (r.status_code, r.json()) == (409, {"error": "target workspace already has an active agent"})
    for missing in (new_id(), "nope"):
        r = await client.post(move, json={"target_workspace_id": missing}, headers=AH)
        assert (r.status_code, r.json()) == (404, {"error": "target workspace not found"})

    r = await client.post(move, json={"target_workspace_id": target.upper()}, headers=AH)
    assert r.status_code == 200
    assert r.json() == {"agent_id": agent_id, "model": "m1", "from_workspace": source, "to_workspace": target}
    assert [x.id for x in await agent_rows(ctx, target)] == [agent_id]
    assert await agent_rows(ctx, source) == []
    r = await client.post(move, json={"target_workspace_id": target}, headers=AH)
    assert (r.status_code, r.json()) == (404, {"error": "no active agent in source workspace"})

    moved = {"agent_id": agent_id, "model": "m1"}
    assert ("AGENT_MOVED", {**moved, "target_workspace_id": target}) in await recorded_events(ctx, source)
    assert ("AGENT_MOVED", {**moved, "source_workspace_id": source}) in await recorded_events(ctx, target)


async def test_a_workspace_token_moves_only_within_its_reach(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(client)
    tree = await build_tree(ctx)
    fe = bearer(await mint_token(ctx, tree["FE"]))
    r = await client.post(f"/workspaces/{tree['FE']}/agent", json={"model": "m"}, headers=fe)
    assert r.status_code == 201
    move = f"/workspaces/{tree['FE']}/agent/move"
    r = await client.post(move, json={"target_workspace_id": tree["Ops"]}, headers=fe)
    assert (r.status_code, r.json()) == (
        403,
        {"error": "access denied: workspaces cannot communicate per hierarchy rules"},
    )
    r = await client.post(move, json={"target_workspace_id": tree["BE"]}, headers=fe)  # a sibling
    assert r.status_code == 200


async def test_concurrent_assigns_leave_one_active_agent(client_factory: ClientFactory) -> None:
    client, ctx, ws = await setup(client_factory)
    replies = await asyncio.gather(
        *(client.post(f"/workspaces/{ws}/agent", json={"model": f"m{i}"}, headers=AH) for i in range(6))
    )
    assert sorted(r.status_code for r in replies) == [201] + [409] * 5
    assert [x.status for x in await agent_rows(ctx, ws)] == ["active"]
