"""TenantGuard (spec 03 §3): active only with MOLECULE_ORG_ID; a foreign request gets an empty 404."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ClientFactory

ORG = "6f1c2b8e-1d2a-4c3b-9e8f-0a1b2c3d4e5f"


@pytest.fixture
async def tenant(client_factory: ClientFactory) -> httpx.AsyncClient:
    return await client_factory(MOLECULE_ORG_ID=ORG)


def assert_guarded(r: httpx.Response) -> None:
    assert r.status_code == 404
    assert r.content == b""
    assert "x-frame-options" not in r.headers  # the guard answers before the security headers


async def test_request_without_org_identity_is_empty_404(tenant: httpx.AsyncClient) -> None:
    assert_guarded(await tenant.get("/admin/liveness"))
    assert_guarded(await tenant.get("/workspaces"))
    assert_guarded(await tenant.get("/no/such/route"))


@pytest.mark.parametrize("path", ["/health", "/metrics"])
async def test_allowlisted_paths_pass(tenant: httpx.AsyncClient, path: str) -> None:
    r = await tenant.get(path)
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY"


async def test_registry_boot_signals_and_cp_prefix_pass_the_guard(tenant: httpx.AsyncClient) -> None:
    # Past the guard the router answers: a JSON body, never the guard's empty 404.
    for path in ("/registry/register", "/registry/heartbeat"):
        r = await tenant.post(path, content=b"{}")
        assert r.content != b""
    cp = await tenant.get("/cp/anything")
    assert cp.json() == {"error": "not found"}
    # Exact match only: the allowlist is not a prefix list.
    assert_guarded(await tenant.get("/health/debug"))
    assert_guarded(await tenant.post("/registry/update-card", content=b"{}"))


async def test_matching_org_header_passes(tenant: httpx.AsyncClient) -> None:
    r = await tenant.get("/admin/liveness", headers={"X-Molecule-Org-Id": ORG})
    assert r.status_code == 200
    assert r.json() == {"subsystems": {}}


async def test_other_org_header_is_refused(tenant: httpx.AsyncClient) -> None:
    assert_guarded(await tenant.get("/admin/liveness", headers={"X-Molecule-Org-Id": "someone-else"}))


async def test_fly_replay_state_passes(tenant: httpx.AsyncClient) -> None:
    replay = f"instance=91854abc;region=ord; state={ORG} ;t=1700000000000"
    r = await tenant.get("/admin/liveness", headers={"Fly-Replay-Src": replay})
    assert r.status_code == 200
    wrong = "instance=1;state=0000;t=1"
    assert_guarded(await tenant.get("/admin/liveness", headers={"Fly-Replay-Src": wrong}))


async def test_same_origin_canvas_passes_only_with_canvas_proxy(client_factory: ClientFactory) -> None:
    with_proxy = await client_factory(MOLECULE_ORG_ID=ORG, CANVAS_PROXY_URL="http://127.0.0.1:3000")
    ok = await with_proxy.get("/admin/liveness", headers={"Referer": "http://testserver/canvas"})
    assert ok.status_code == 200
    suffix_attack = await with_proxy.get(
        "/admin/liveness", headers={"Referer": "http://testserver.evil.com/"}
    )
    assert_guarded(suffix_attack)
    without_proxy = await client_factory(MOLECULE_ORG_ID=ORG)
    assert_guarded(
        await without_proxy.get("/admin/liveness", headers={"Referer": "http://testserver/canvas"})
    )


async def test_guard_off_without_org_id(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/liveness")).status_code == 200


async def test_refused_requests_still_count_in_metrics(tenant: httpx.AsyncClient) -> None:
    assert_guarded(await tenant.get("/admin/liveness"))
    text = (await tenant.get("/metrics")).text
    assert 'molecule_http_requests_total{method="GET",path="/admin/liveness",status="404"} 1.0' in text
