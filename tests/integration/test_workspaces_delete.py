"""DELETE /workspaces/:id (spec 01 §4.3): confirmation, cascade, tokens, events, stop failures, purge."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.common.kv import liveness_key, url_key
from workspace_server.db.schema import (
    activity_logs,
    canvas_layouts,
    structure_events,
    workspace_auth_tokens,
    workspace_config,
    workspace_secrets,
    workspaces,
)

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CONFIRM_MSG = "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete."


def ctx_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


async def make(client: httpx.AsyncClient, name: str, parent: str | None = None, **extra: Any) -> str:
    body = {"name": name, **({"parent_id": parent} if parent else {}), **extra}
    r = await client.post("/workspaces", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def token_for(client: httpx.AsyncClient, ws_id: str) -> str:
    async with ctx_of(client).engine.begin() as conn:
        return await issue_workspace_token(conn, ws_id)


async def count(client: httpx.AsyncClient, table: sa.Table, col: Any, ids: list[str]) -> int:
    async with ctx_of(client).engine.connect() as conn:
        q = sa.select(sa.func.count()).select_from(table).where(col.in_(ids))
        return int((await conn.execute(q)).scalar() or 0)


async def removed_events(client: httpx.AsyncClient) -> list[tuple[str, Any]]:
    e = structure_events
    async with ctx_of(client).engine.connect() as conn:
        rows = await conn.execute(
            sa.select(e.c.workspace_id, e.c.payload)
            .where(e.c.event_type == "WORKSPACE_REMOVED")
            .order_by(e.c.created_at)
        )
        return [(r.workspace_id, r.payload) for r in rows]


class StopRecorder:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.stopped: list[str] = []
        self.volumes: list[str] = []

    async def provision(self, spec: Any) -> None:
        return None

    async def stop(self, ws_id: str) -> None:
        self.stopped.append(ws_id)
        if ws_id in self.fail:
            raise RuntimeError("docker daemon said no: /var/lib/secret-path")

    async def remove_volume(self, ws_id: str) -> None:
        self.volumes.append(ws_id)


async def tree(client: httpx.AsyncClient) -> dict[str, str]:
    root = await make(client, "root")
    child = await make(client, "child", root)
    child2 = await make(client, "child2", root)
    grand = await make(client, "grand", child)
    return {"root": root, "child": child, "child2": child2, "grand": grand}


async def test_parent_needs_confirmation(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    t = await tree(client)
    r = await client.delete(f"/workspaces/{t['root']}", headers=AUTH)
    assert r.status_code == 409
    assert r.json() == {
        "children": [{"id": t["child"], "name": "child"}, {"id": t["child2"], "name": "child2"}],
        "children_count": 2,
        "message": CONFIRM_MSG,
        "status": "confirmation_required",
    }
    async with ctx_of(client).engine.connect() as conn:
        statuses = (await conn.execute(sa.select(workspaces.c.status))).scalars().all()
    assert "removed" not in statuses


async def test_cascade_removes_every_depth_revokes_tokens_and_orders_events(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    t = await tree(client)
    grand_token = await token_for(client, t["grand"])
    await ctx_of(client).kv.set(url_key(t["grand"]), "http://x", 60)
    await ctx_of(client).kv.set(liveness_key(t["root"]), "online", 60)
    ids = list(t.values())

    # the token works before the delete
    ok = await client.get(
        f"/workspaces/{t['grand']}/config", headers={"Authorization": f"Bearer {grand_token}"}
    )
    assert ok.status_code == 200

    r = await client.delete(f"/workspaces/{t['root']}?confirm=true", headers=AUTH)
    assert (r.status_code, r.text) == (200, '{"cascade_deleted":3,"status":"removed"}')

    async with ctx_of(client).engine.connect() as conn:
        rows = dict((await conn.execute(sa.select(workspaces.c.id, workspaces.c.status))).all())
        live_tokens = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(workspace_auth_tokens)
                .where(workspace_auth_tokens.c.revoked_at.is_(None))
            )
        ).scalar()
    assert {rows[i] for i in ids} == {"removed"}
    assert live_tokens == 0
    assert await count(client, canvas_layouts, canvas_layouts.c.workspace_id, ids) == 0
    assert await ctx_of(client).kv.get(url_key(t["grand"])) is None
    assert await ctx_of(client).kv.get(liveness_key(t["root"])) is None

    revoked = await client.get(
        f"/workspaces/{t['grand']}/config", headers={"Authorization": f"Bearer {grand_token}"}
    )
    assert (revoked.status_code, revoked.json()) == (401, {"error": "invalid workspace auth token"})

    assert await removed_events(client) == [
        (t["child"], {}),
        (t["child2"], {}),
        (t["grand"], {}),
        (t["root"], {"cascade_deleted": 3}),
    ]
    assert (await client.get("/workspaces", headers=AUTH)).json() == []


async def test_leaf_delete_and_unknown_and_bad_ids(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    leaf = await make(client, "leaf")
    r = await client.delete(f"/workspaces/{leaf}", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"cascade_deleted": 0, "status": "removed"})
    again = await client.delete(f"/workspaces/{leaf}", headers=AUTH)  # idempotent retry
    assert (again.status_code, again.json()) == (200, {"cascade_deleted": 0, "status": "removed"})

    unknown = "123e4567-e89b-12d3-a456-426614174000"
    r = await client.delete(f"/workspaces/{unknown}", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"cascade_deleted": 0, "status": "removed"})
    assert all(wid != unknown for wid, _ in await removed_events(client))

    r = await client.delete("/workspaces/ws-123", headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"})
    r = await client.delete(f"/workspaces/{leaf}")
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})


async def test_stop_hook_runs_descendants_first_and_failures_are_500(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    root = await make(client, "root")
    child = await make(client, "child", root)
    hook = StopRecorder(fail={child})
    ctx_of(client).provisioner = hook

    r = await client.delete(f"/workspaces/{root}?confirm=true&purge=true", headers=AUTH)
    assert r.status_code == 500
    assert r.json() == {
        "error": f"workspace marked removed, but 1 stop call(s) failed — please retry: stop {child} failed",
        "removed_count": 2,
        "stop_failures": 1,
    }
    assert "secret-path" not in r.text
    assert hook.stopped == [child, root]
    assert hook.volumes == [root]  # no volume removal after a failed stop
    # rows stay (marked removed, not purged) so the client can retry
    async with ctx_of(client).engine.connect() as conn:
        rows = dict((await conn.execute(sa.select(workspaces.c.id, workspaces.c.status))).all())
    assert rows == {root: "removed", child: "removed"}
    assert [w for w, _ in await removed_events(client)] == [child, root]

    hook.fail.clear()
    retry = await client.delete(f"/workspaces/{root}?confirm=true", headers=AUTH)
    assert (retry.status_code, retry.json()) == (200, {"cascade_deleted": 0, "status": "removed"})


async def test_purge_hard_deletes_everything_pointing_at_the_workspaces(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    root = await make(client, "root", secrets={"K": "v"})
    child = await make(client, "child", root)
    bystander = await make(client, "bystander")
    await token_for(client, root)
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(
            sa.insert(activity_logs).values(id=new_id(), workspace_id=child, activity_type="a2a_receive")
        )
        await conn.execute(
            sa.update(workspaces).where(workspaces.c.id == bystander).values(forwarded_to=root)
        )
    await client.patch(f"/workspaces/{root}/config", json={"a": 1}, headers=AUTH)

    r = await client.delete(f"/workspaces/{root}?confirm=true&purge=true", headers=AUTH)
    assert (r.status_code, r.text) == (200, '{"cascade_deleted":1,"status":"purged"}')

    ids = [root, child]
    assert await count(client, workspaces, workspaces.c.id, ids) == 0
    for table in (workspace_secrets, workspace_config, canvas_layouts, workspace_auth_tokens, activity_logs):
        assert await count(client, table, table.c.workspace_id, ids) == 0, table.name
    # the audit trail outlives the purge
    assert await count(client, structure_events, structure_events.c.workspace_id, ids) > 0
    async with ctx_of(client).engine.connect() as conn:
        fwd = (
            await conn.execute(sa.select(workspaces.c.forwarded_to).where(workspaces.c.id == bystander))
        ).scalar()
    assert fwd is None
    got = await client.get(f"/workspaces/{root}")
    assert (got.status_code, got.json()) == (404, {"error": "workspace not found"})
    state = await client.get(f"/workspaces/{root}/state", headers=AUTH)
    assert (state.status_code, state.json()) == (404, {"deleted": True, "workspace_id": root})


async def test_cycle_in_parents_terminates(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    a = await make(client, "a")
    b = await make(client, "b", a)
    assert (await client.patch(f"/workspaces/{a}", json={"parent_id": b}, headers=AUTH)).status_code == 200
    r = await client.delete(f"/workspaces/{a}?confirm=true", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"cascade_deleted": 1, "status": "removed"})
