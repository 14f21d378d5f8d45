"""The reference server's end-to-end API flows (spec 07 §3), against a real uvicorn server.

Two reference agents (`python -m molecule_agent`, real subprocesses) register and heartbeat on their own;
the test then walks discovery, peers, access checks, activity, degrade/recover, notify, bundles and delete
the way the reference's shell scripts do, on SQLite and on Postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import AgentStarter, LiveServer


async def wait_for(fn: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await fn()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_reference_api_flows(
    live_server_factory: Callable[..., LiveServer], reference_agents: AgentStarter
) -> None:
    srv = live_server_factory()
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
        # create two root workspaces: 201 provisioning even without a backend
        ids = []
        for name in ("Echo Agent", "SEO Agent"):
            r = await c.post("/workspaces", json={"name": name, "tier": 1})
            assert r.status_code == 201, r.text
            assert r.json()["status"] == "provisioning"
            ids.append(r.json()["id"])
        a, b = ids
        r = await c.get(f"/workspaces/{a}")
        assert r.json()["status"] == "failed" and r.json()["agent_card"] is None

        # the agents register themselves (minting their tokens) and heartbeat
        dirs = [reference_agents(a, srv.url), reference_agents(b, srv.url)]

        async def both_online_and_heartbeating() -> bool:
            got = [(await c.get(f"/workspaces/{w}")).json() for w in (a, b)]
            return all(w["status"] == "online" and w["uptime_seconds"] >= 1 for w in got)

        await wait_for(both_online_and_heartbeating, "both agents online and heartbeating")
        tok_a = (dirs[0] / ".auth_token").read_text().strip()
        tok_b = (dirs[1] / ".auth_token").read_text().strip()
        assert len(tok_a) == 43 and tok_a != tok_b
        ws_a = (await c.get(f"/workspaces/{a}")).json()
        assert ws_a["agent_card"]["skills"][0]["id"] == "echo"
        assert ws_a["url"].startswith("http://localhost:")
        assert "current_task" not in ws_a and "budget_limit" not in ws_a

        # now that tokens exist, admin routes are closed to anonymous callers
        assert (await c.get("/workspaces")).status_code == 401
        hdr_a = {"Authorization": f"Bearer {tok_a}", "X-Workspace-ID": a}

        # re-register without the bearer is refused (the ownership gate)
        r = await c.post("/registry/register", json={"id": a, "url": "http://localhost:1", "agent_card": {}})
        assert r.status_code == 401 and r.json() == {"error": "missing workspace auth token"}

        # discovery, peers, access (roots are siblings)
        r = await c.get(f"/registry/discover/{b}", headers=hdr_a)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == b and r.json()["name"] == "SEO Agent"
        r = await c.get(f"/registry/{a}/peers", headers=hdr_a)
        assert [p["id"] for p in r.json()] == [b]
        r = await c.post("/registry/check-access", json={"caller_id": a, "target_id": b})
        assert r.json() == {"allowed": True}
        r = await c.get(f"/registry/discover/{b}", headers={"X-Workspace-ID": a})
        assert r.status_code == 401

        # activity: report and read back
        r = await c.post(
            f"/workspaces/{a}/activity",
            headers=hdr_a,
            json={"activity_type": "agent_log", "summary": "hello", "method": "log"},
        )
        assert r.status_code == 200 and r.json() == {"status": "logged"}
        r = await c.get(f"/workspaces/{a}/activity?type=agent_log", headers=hdr_a)
        assert [x["summary"] for x in r.json()] == ["hello"]

        # degrade and recover through heartbeats
        hb = {
            "workspace_id": a,
            "error_rate": 0.9,
            "sample_error": "boom",
            "active_tasks": 0,
            "uptime_seconds": 5,
        }
        r = await c.post("/registry/heartbeat", json=hb, headers=hdr_a)
        assert r.status_code == 200
        assert (await c.get(f"/workspaces/{a}")).json()["status"] == "degraded"
        hb.update(error_rate=0.0, sample_error="")
        await c.post("/registry/heartbeat", json=hb, headers=hdr_a)
        assert (await c.get(f"/workspaces/{a}")).json()["status"] == "online"

        # notify with an attachment
        r = await c.post(
            f"/workspaces/{a}/notify",
            headers=hdr_a,
            json={"message": "done", "attachments": [{"uri": "workspace:/workspace/r.txt", "name": "r.txt"}]},
        )
        assert r.status_code == 200 and r.json() == {"status": "sent"}

        # bundle round trip (workspace tokens are admin credentials while ADMIN_TOKEN is unset)
        admin = {"Authorization": f"Bearer {tok_b}"}
        r = await c.get(f"/bundles/export/{a}", headers=admin)
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle["name"] == "Echo Agent"
        r = await c.post("/bundles/import", json=bundle, headers=admin)
        assert r.status_code == 201, r.text
        imported = r.json()["workspace_id"]
        assert imported not in (a, b)

        # delete: tokens of the deleted workspace stop working
        r = await c.delete(f"/workspaces/{a}?confirm=true", headers=admin)
        assert r.status_code == 200 and r.json()["status"] == "removed"
        r = await c.get(f"/workspaces/{a}/activity", headers=hdr_a)
        assert r.status_code == 401
        listed = [w["id"] for w in (await c.get("/workspaces", headers=admin)).json()]
        assert a not in listed and b in listed
