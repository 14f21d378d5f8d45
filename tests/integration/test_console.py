"""GET /workspaces/:id/console (AdminAuth): the instance's recent output, 501 without a backend."""

from __future__ import annotations

from tests.conftest import ClientFactory
from tests.integration.orchestrator_support import (
    Platform,
    PlatformFactory,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from tests.integration.registry_support import add_workspace, bearer, ctx_of
from workspace_server.common.ids import new_id


async def test_console_reads_the_agents_output(platform_factory: PlatformFactory) -> None:
    p: Platform = await platform_factory("process")
    wid = await p.create("Console Agent")
    await p.wait_status(wid, "online")
    r = await p.http.get(f"/workspaces/{wid}/console")
    assert r.status_code == 200
    assert list(r.json()) == ["output"] and "A2A listening" in r.json()["output"]

    r = await p.http.get(f"/workspaces/{new_id()}/console")
    assert (r.status_code, r.json()) == (404, {"error": "no console output: the workspace has no instance"})
    r = await p.http.get("/workspaces/not-a-uuid/console")
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})


async def test_no_backend_is_501_and_admin_only(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN="admin-secret", WORKSPACE_BACKEND="none")
    ws = await add_workspace(ctx_of(client), "Remote", status="online")
    r = await client.get(f"/workspaces/{ws}/console")
    assert r.status_code == 401
    r = await client.get(f"/workspaces/{ws}/console", headers=bearer("admin-secret"))
    assert (r.status_code, r.json()) == (
        501,
        {"error": "console output unavailable on this deployment (no control plane)"},
    )
