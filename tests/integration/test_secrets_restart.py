"""Restart-on-change (spec 05 §1 Rules, §11): which workspaces the restart hook is called for."""

from __future__ import annotations

from tests.conftest import ClientFactory
from tests.integration.secrets_support import (
    ADMIN_H,
    RestartRecorder,
    admin_client,
    make_ws,
)


async def test_workspace_changes_restart_that_workspace(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    rec = RestartRecorder(client)
    ws, bystander = await make_ws(client), await make_ws(client)

    await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    assert await rec.settled() == [ws]
    await client.put(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v2"}, headers=ADMIN_H)
    assert await rec.settled() == [ws]
    await client.delete(f"/workspaces/{ws}/secrets/K", headers=ADMIN_H)
    assert await rec.settled() == [ws]
    await client.put(f"/workspaces/{ws}/model", json={"model": "m"}, headers=ADMIN_H)
    assert await rec.settled() == [ws]
    await client.put(f"/workspaces/{ws}/model", json={"model": ""}, headers=ADMIN_H)
    assert await rec.settled() == [ws]
    assert bystander not in rec.ids


async def test_failed_changes_restart_nothing(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    rec = RestartRecorder(client)
    ws = await make_ws(client)
    assert (await client.delete(f"/workspaces/{ws}/secrets/NOPE", headers=ADMIN_H)).status_code == 404
    assert (await client.delete("/settings/secrets/NOPE", headers=ADMIN_H)).status_code == 404
    assert (
        await client.post(f"/workspaces/{ws}/secrets", json={"key": "K"}, headers=ADMIN_H)
    ).status_code == 400
    assert await rec.settled() == []


async def test_workspace_change_skips_workspaces_that_must_not_restart(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    rec = RestartRecorder(client)
    paused = await make_ws(client, status="paused")
    skipped = [
        paused,
        await make_ws(client, status="removed"),
        await make_ws(client, status="hibernated"),
        await make_ws(client, status="hibernating"),
        await make_ws(client, runtime="external"),
        await make_ws(client, parent_id=paused),  # paused ancestor
    ]
    for ws in skipped:
        r = await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
        assert r.status_code == 200  # still saved: it is used on the next start
    assert await rec.settled() == []


async def test_global_change_restarts_exactly_the_inheriting_workspaces(
    client_factory: ClientFactory,
) -> None:
    client = await admin_client(client_factory)
    inheriting = [
        await make_ws(client),
        await make_ws(client, status="failed"),
        await make_ws(client, status="offline"),
        await make_ws(client, status="provisioning"),
    ]
    overriding = await make_ws(client)
    paused = await make_ws(client, status="paused")
    # never restarted by a global change: removed, hibernated, external, below a paused ancestor
    await make_ws(client, status="removed")
    await make_ws(client, status="hibernated")
    await make_ws(client, runtime="external")
    await make_ws(client, parent_id=paused)
    await client.post(
        f"/workspaces/{overriding}/secrets", json={"key": "TOKEN", "value": "own"}, headers=ADMIN_H
    )
    rec = RestartRecorder(client)  # installed after the setup writes

    await client.put("/settings/secrets", json={"key": "TOKEN", "value": "rotated"}, headers=ADMIN_H)
    assert await rec.settled() == sorted(inheriting)
    await client.delete("/settings/secrets/TOKEN", headers=ADMIN_H)
    assert await rec.settled() == sorted(inheriting)
    await client.post("/admin/secrets", json={"key": "OTHER", "value": "x"}, headers=ADMIN_H)
    assert await rec.settled() == sorted([*inheriting, overriding])


async def test_failing_restart_hook_does_not_fail_the_request(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    ws = await make_ws(client)
    calls: list[str] = []

    async def broken(ws_id: str) -> None:
        calls.append(ws_id)
        raise RuntimeError("docker exploded")

    rec = RestartRecorder(client)
    rec.ctx.restart_hook = broken
    r = await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    assert r.status_code == 200
    await rec.settled()
    assert calls == [ws]


async def test_no_hook_no_restart(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)  # ctx.restart_hook is None until the orchestrator sets one
    ws = await make_ws(client)
    r = await client.post(f"/workspaces/{ws}/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    assert r.status_code == 200
    r = await client.post("/settings/secrets", json={"key": "K", "value": "v"}, headers=ADMIN_H)
    assert r.status_code == 200
