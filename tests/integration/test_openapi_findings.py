"""Regressions for what the schemathesis run (test_openapi_fuzz.py) found, one test per finding."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import ClientFactory

ADMIN = "findings-admin"
H = {"Authorization": f"Bearer {ADMIN}"}


@pytest.mark.parametrize("source", [str(uuid.uuid4()), "not-a-uuid", "%F2%89%9F%BF"])
async def test_record_delegation_for_an_unknown_workspace_is_404(
    client_factory: ClientFactory, source: str
) -> None:
    """Negative fuzzing: an admin (or org) token passes WorkspaceAuth for any id, and recording a
    delegation for an id with no workspace row failed the activity row's foreign key: 500."""
    c = await client_factory(ADMIN_TOKEN=ADMIN)
    target = (await c.post("/workspaces", json={"name": "t", "external": True}, headers=H)).json()["id"]
    body = {"target_id": target, "task": "t", "delegation_id": "d1"}
    r = await c.post(f"/workspaces/{source}/delegations/record", json=body, headers=H)
    assert r.status_code == 404
    assert r.json() == {"error": "workspace not found"}
    # a real workspace still records
    src = (await c.post("/workspaces", json={"name": "s", "external": True}, headers=H)).json()["id"]
    ok = await c.post(f"/workspaces/{src}/delegations/record", json=body, headers=H)
    assert ok.status_code == 202
    assert ok.json() == {"delegation_id": "d1", "status": "recorded"}
