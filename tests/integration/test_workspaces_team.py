"""Team expand / collapse (spec 01 §4.5, workspaces/team.py) on both databases, without a backend: the
children are created through the ordinary create path (which fails them for want of a backend, as any
create here), and collapse runs the delete cascade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ClientFactory
from tests.integration.registry_support import mint_token, row
from workspace_server.auth import tokens

ADMIN = "team-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
LEAD = {
    "name": "Team Lead",
    "sub_workspaces": [
        {"config": "researcher", "name": "Researcher", "role": "finds things"},
        {"config": "writer", "role": "writes them up"},
        {"config": "nope", "name": "Ghost"},
        "not a mapping",
    ],
}


def write_template(configs: Path, name: str, config: dict[str, Any]) -> None:
    (configs / name).mkdir(parents=True)
    (configs / name / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@pytest.fixture
async def api(client_factory: ClientFactory, tmp_path: Path) -> httpx.AsyncClient:
    configs = tmp_path / "configs"
    write_template(configs, "team-lead", LEAD)
    write_template(configs, "researcher", {"name": "Researcher", "runtime": "echo"})
    write_template(configs, "writer", {"name": "Writer", "runtime": "echo"})
    write_template(configs, "loner", {"name": "Loner"})
    write_template(
        configs, "by-name-only", {"name": "Odd Name v2.0", "sub_workspaces": [{"config": "writer"}]}
    )
    (configs / "broken").mkdir(parents=True)
    (configs / "broken" / "config.yaml").write_text("name: Broken\nsub_workspaces: [unclosed\n")
    client: httpx.AsyncClient = await client_factory(ADMIN_TOKEN=ADMIN, CONFIGS_DIR=str(configs))
    return client


def ctx_of(api: httpx.AsyncClient) -> Any:
    return api.app.state.ctx  # type: ignore[attr-defined]


async def create(api: httpx.AsyncClient, name: str, **extra: Any) -> str:
    r = await api.post("/workspaces", json={"name": name, "tier": 2, **extra}, headers=AUTH)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def children_of(api: httpx.AsyncClient, ws_id: str) -> list[dict[str, Any]]:
    listed = (await api.get("/workspaces", headers=AUTH)).json()
    return sorted((w for w in listed if w["parent_id"] == ws_id), key=lambda w: w["name"])


async def test_expand_creates_a_child_per_sub_workspace(api: httpx.AsyncClient) -> None:
    lead = await create(api, "Team Lead")
    r = await api.post(f"/workspaces/{lead}/expand", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "expanded"
    assert [(c["name"], c["role"]) for c in body["children"]] == [
        ("Researcher", "finds things"),
        ("writer", "writes them up"),  # no name: the config's
        ("Ghost", ""),  # a config that names no template: created from the defaults
    ]
    kids = await children_of(api, lead)
    assert sorted(k["id"] for k in kids) == sorted(c["id"] for c in body["children"])
    assert {k["tier"] for k in kids} == {2}  # the parent's tier
    assert {k["name"]: k["runtime"] for k in kids} == {
        "Ghost": "langgraph",
        "Researcher": "echo",
        "writer": "echo",
    }
    events = (await api.get(f"/events/{lead}", headers=AUTH)).json()
    expanded = [e for e in events if e["event_type"] == "WORKSPACE_EXPANDED"]
    assert [e["payload"] for e in expanded] == [{"children": body["children"]}]
    for kid in kids:  # each child went through the create path: provisioning announced, a token minted
        types = [e["event_type"] for e in (await api.get(f"/events/{kid['id']}", headers=AUTH)).json()]
        assert "WORKSPACE_PROVISIONING" in types


async def test_expand_finds_the_template_by_its_name_line(api: httpx.AsyncClient) -> None:
    odd = await create(api, "Odd Name v2.0")  # no dir "odd-name-v20": found by its `name:` line
    r = await api.post(f"/workspaces/{odd}/expand", headers=AUTH)
    assert r.status_code == 200 and [c["name"] for c in r.json()["children"]] == ["writer"]


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("Nobody", 400, "no config found for workspace"),
        ("Loner", 400, "workspace has no sub_workspaces defined in config"),
        ("Broken", 500, "failed to parse config"),
    ],
)
async def test_expand_errors(api: httpx.AsyncClient, name: str, status: int, error: str) -> None:
    wid = await create(api, name)
    r = await api.post(f"/workspaces/{wid}/expand", headers=AUTH)
    assert (r.status_code, r.json()) == (status, {"error": error})
    assert await children_of(api, wid) == []


async def test_unknown_or_removed_workspace_is_404(api: httpx.AsyncClient) -> None:
    for verb in ("expand", "collapse"):
        for bad in ("not-a-uuid", "1b7c0c3e-0000-4000-8000-00000000dead"):
            r = await api.post(f"/workspaces/{bad}/{verb}", headers=AUTH)
            assert (r.status_code, r.json()) == (404, {"error": "workspace not found"}), (verb, bad)
    gone = await create(api, "Team Lead")
    assert (await api.delete(f"/workspaces/{gone}?confirm=true", headers=AUTH)).status_code == 200
    r = await api.post(f"/workspaces/{gone}/expand", headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})


async def test_collapse_removes_children_with_the_delete_cascade(api: httpx.AsyncClient) -> None:
    lead = await create(api, "Lead")
    a = await create(api, "Alpha", parent_id=lead)
    b = await create(api, "Beta", parent_id=lead)
    grandchild = await create(api, "Gamma", parent_id=a)
    token = await mint_token(ctx_of(api), grandchild)
    r = await api.post(f"/workspaces/{lead}/collapse", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"removed": ["Alpha", "Beta"], "status": "collapsed"})
    for wid in (a, b, grandchild):  # grandchildren too, which the reference left behind
        assert (await row(ctx_of(api), wid)).status == "removed"
    assert (await row(ctx_of(api), lead)).status != "removed"
    async with ctx_of(api).engine.begin() as conn:  # its token was revoked with it
        assert await tokens.validate_workspace_token(conn, token, grandchild) is None
    events = (await api.get(f"/events/{lead}", headers=AUTH)).json()
    collapsed = [e["payload"] for e in events if e["event_type"] == "WORKSPACE_COLLAPSED"]
    assert collapsed == [{"removed_children": ["Alpha", "Beta"]}]
    again = await api.post(f"/workspaces/{lead}/collapse", headers=AUTH)
    assert (again.status_code, again.json()) == (200, {"removed": [], "status": "collapsed"})


async def test_team_routes_need_workspace_auth(api: httpx.AsyncClient) -> None:
    lead = await create(api, "Team Lead")
    await mint_token(ctx_of(api), lead)  # once a workspace has a token, its routes need a bearer
    for verb in ("expand", "collapse"):
        r = await api.post(f"/workspaces/{lead}/{verb}")
        assert r.status_code == 401, verb
    assert await children_of(api, lead) == []
