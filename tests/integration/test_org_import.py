"""Org templates (spec 06 §3.5, orgs/): `GET /org/templates` and `POST /org/import` on both databases.

Templates are built under `tmp_path/org-templates`, next to `CONFIGS_DIR` (`<configs>/../org-templates`
is one of the discovery candidates). No backend (`WORKSPACE_BACKEND=none`): nodes are created through
the ordinary create path, which fails them for want of a backend, as any create here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import TEST_ENCRYPTION_KEY, ClientFactory
from workspace_server.db.schema import (
    agent_memories,
    canvas_layouts,
    structure_events,
    workspace_auth_tokens,
    workspace_schedules,
    workspace_secrets,
    workspaces,
)
from workspace_server.orgs.importer import NO_BACKEND, upsert_template_schedule
from workspace_server.secrets.crypto import crypto_for

ADMIN = "org-admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}

TEAM: dict[str, Any] = {
    "name": "Dev Team",
    "description": "a small team",
    "defaults": {"runtime": "echo", "tier": 1, "initial_memories": [{"content": "default memory"}]},
    "required_env": ["OPENAI_API_KEY"],
    "recommended_env": [{"any_of": ["GITHUB_TOKEN", "GH_TOKEN"]}, "OPENAI_API_KEY", "bad name"],
    "global_memories": [{"content": "org wide [MEMORY fact", "scope": "LOCAL"}],
    "workspaces": [
        {
            "name": "Lead",
            "role": "leads",
            "tier": 3,
            "canvas": {"x": 100, "y": 50},
            "files_dir": "lead",
            "initial_memories": [
                {"content": "token sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789", "scope": "team"},
                {"content": "bad scope", "scope": "NOPE"},
            ],
            "schedules": [
                {"name": "daily", "cron_expr": "0 9 * * *", "prompt": "standup"},
                {"name": "from-file", "cron_expr": "*/5 * * * *", "prompt_file": "hourly.md"},
                {"name": "bad-cron", "cron_expr": "not a cron", "prompt": "x"},
                {"name": "escape", "cron_expr": "0 9 * * *", "prompt_file": "../../secret.txt"},
            ],
            "channels": [{"type": "telegram", "config": {"bot_token": "${TG}"}}],
            "plugins": ["memory-tools"],
            "children": [
                {"name": "Dev A", "runtime": "langgraph"},
                {"name": "Dev B", "children": [{"name": "Intern"}]},
                {"name": "Remote", "external": True},
            ],
        }
    ],
}


def write_org(org_root: Path, dirname: str, doc: Any, filename: str = "org.yaml") -> Path:
    d = org_root / dirname
    d.mkdir(parents=True, exist_ok=True)
    (d / filename).write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return d


@pytest.fixture
def org_root(tmp_path: Path) -> Path:
    for cand in (Path("org-templates"), Path("../org-templates")):
        assert not cand.is_dir(), f"{cand.resolve()} would shadow the test's org templates dir"
    root = tmp_path / "org-templates"
    team = write_org(root, "dev-team", TEAM)
    (team / ".env").write_text("ORG_KEY=org-value\nSHARED=from-org\n", encoding="utf-8")
    (team / "lead").mkdir()
    (team / "lead" / ".env").write_text("export LEAD_KEY='lead value'\nSHARED=from-lead\nEMPTY=\n")
    (team / "lead" / "hourly.md").write_text("check the queue\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("outside", encoding="utf-8")
    return root


@pytest.fixture
async def api(client_factory: ClientFactory, tmp_path: Path, org_root: Path) -> httpx.AsyncClient:
    (tmp_path / "configs").mkdir(exist_ok=True)
    client: httpx.AsyncClient = await client_factory(
        ADMIN_TOKEN=ADMIN, SECRETS_ENCRYPTION_KEY=TEST_ENCRYPTION_KEY
    )
    return client


def ctx_of(api: httpx.AsyncClient) -> Any:
    return api.app.state.ctx  # type: ignore[attr-defined]


async def rows(api: httpx.AsyncClient, query: Any) -> list[Any]:
    async with ctx_of(api).engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def do_import(api: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await api.post("/org/import", json=body, headers=AUTH)


async def test_listing(api: httpx.AsyncClient, org_root: Path) -> None:
    write_org(org_root, "yml-only", {"name": "Yml", "workspaces": [{"name": "A"}]}, filename="org.yml")
    write_org(org_root, "broken", "name: [unclosed\n")
    write_org(org_root, "bad-include", "name: X\nworkspaces: !include ../../outside.yaml\n")
    (org_root / "half-clone" / ".git").mkdir(parents=True)
    (org_root / "not-a-dir.yaml").write_text("name: nope\n")
    r = await api.get("/org/templates", headers=AUTH)
    assert r.status_code == 200, r.text
    items = {i["dir"]: i for i in r.json()}
    assert sorted(items) == ["dev-team", "yml-only"]
    assert items["dev-team"] == {
        "description": "a small team",
        "dir": "dev-team",
        "name": "Dev Team",
        "recommended_env": [{"any_of": ["GH_TOKEN", "GITHUB_TOKEN"]}],  # OPENAI_API_KEY is required
        "required_env": ["OPENAI_API_KEY"],
        "workspaces": 5,
    }
    assert items["yml-only"]["workspaces"] == 1


async def test_admin_auth_required(api: httpx.AsyncClient) -> None:
    assert (await api.get("/org/templates")).json() == {"error": "admin auth required"}
    r = await api.post("/org/import", json={"dir": "dev-team"})
    assert r.status_code == 401
    r = await api.post("/org/import", json={"dir": "dev-team"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_preflight_412_then_force(api: httpx.AsyncClient) -> None:
    r = await do_import(api, {"dir": "dev-team"})
    assert r.status_code == 412, r.text
    body = r.json()
    assert body["error"] == "missing required environment variables"
    assert body["missing_env"] == ["OPENAI_API_KEY"]
    assert body["required_env"] == ["OPENAI_API_KEY"]
    assert body["template"] == "Dev Team"
    assert body["suggestion"]
    assert (await rows(api, sa.select(workspaces.c.id))) == []

    put = await api.put("/settings/secrets", json={"key": "OPENAI_API_KEY", "value": "x"}, headers=AUTH)
    assert put.status_code == 200, put.text
    r = await do_import(api, {"dir": "dev-team"})
    assert r.status_code == 201, r.text


async def test_import_creates_the_tree(api: httpx.AsyncClient) -> None:
    r = await do_import(api, {"dir": "dev-team", "force": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["org"] == "Dev Team" and body["count"] == 5
    names = [w["name"] for w in body["workspaces"]]
    assert names == ["Lead", "Dev A", "Dev B", "Intern", "Remote"]  # pre-order
    lead = body["workspaces"][0]
    assert lead["tier"] == 3
    assert lead["channels_skipped"] == [
        {"reason": "missing env: [TG]", "type": "telegram", "workspace": "Lead"}
    ]
    no_backend = NO_BACKEND  # nothing is started here, so nothing can be written
    assert lead["plugins_skipped"] == [{"plugin": "memory-tools", "reason": no_backend, "workspace": "Lead"}]
    assert lead["config_skipped"] == [{"key": "files_dir", "reason": no_backend, "workspace": "Lead"}]
    ids = {w["name"]: w["id"] for w in body["workspaces"]}

    found = {
        row.name: row
        for row in await rows(
            api,
            sa.select(
                workspaces.c.id,
                workspaces.c.name,
                workspaces.c.parent_id,
                workspaces.c.tier,
                workspaces.c.runtime,
                workspaces.c.status,
            ),
        )
    }
    assert set(found) == set(ids)
    assert found["Lead"].parent_id is None
    assert {found[n].parent_id for n in ("Dev A", "Dev B", "Remote")} == {ids["Lead"]}
    assert found["Intern"].parent_id == ids["Dev B"]
    assert (found["Lead"].tier, found["Dev A"].tier) == (3, 1)  # node, else defaults
    assert (found["Lead"].runtime, found["Dev A"].runtime) == ("echo", "langgraph")
    assert found["Remote"].status == "awaiting_agent"
    assert found["Dev A"].status == "failed"  # no backend here

    tokens = await rows(api, sa.select(workspace_auth_tokens.c.workspace_id))
    assert ids["Remote"] in {t.workspace_id for t in tokens}

    pos = {r.workspace_id: (r.x, r.y) for r in await rows(api, sa.select(canvas_layouts))}
    assert pos[ids["Lead"]] == (100, 50)
    # children in the 2-column grid; Dev B is a parent so its row is taller
    assert pos[ids["Dev A"]] == (100 + 16, 50 + 130)
    dev_b_width = 16 * 2 + 240
    assert pos[ids["Dev B"]] == (100 + 16 + dev_b_width + 14, 50 + 130)
    dev_b_height = 130 + 130 + 16
    assert pos[ids["Remote"]] == (100 + 16, 50 + 130 + dev_b_height + 14)
    assert pos[ids["Intern"]] == (pos[ids["Dev B"]][0] + 16, pos[ids["Dev B"]][1] + 130)

    # the events carry parent-relative coordinates and the parent, so the canvas nests children live
    provisioning = {
        row.workspace_id: row.payload
        for row in await rows(
            api, sa.select(structure_events).where(structure_events.c.event_type == "WORKSPACE_PROVISIONING")
        )
    }
    assert provisioning[ids["Lead"]] == {"name": "Lead", "tier": 3, "runtime": "echo", "x": 100, "y": 50}
    assert provisioning[ids["Dev B"]] == {
        "name": "Dev B",
        "tier": 1,
        "runtime": "echo",
        "x": 16 + dev_b_width + 14,
        "y": 130,
        "parent_id": ids["Lead"],
    }
    assert provisioning[ids["Intern"]] == {
        "name": "Intern",
        "tier": 1,
        "runtime": "echo",
        "x": 16,
        "y": 130,
        "parent_id": ids["Dev B"],
    }


async def test_schedules_memories_and_secrets(api: httpx.AsyncClient) -> None:
    r = await do_import(api, {"dir": "dev-team", "force": True})
    assert r.status_code == 201, r.text
    ids = {w["name"]: w["id"] for w in r.json()["workspaces"]}
    lead = ids["Lead"]

    scheds = {
        s.name: s
        for s in await rows(
            api, sa.select(workspace_schedules).where(workspace_schedules.c.workspace_id == lead)
        )
    }
    assert sorted(scheds) == ["daily", "from-file"]  # bad cron and escaping prompt_file skipped
    assert {s.source for s in scheds.values()} == {"template"}
    assert scheds["from-file"].prompt == "check the queue\n"
    assert scheds["daily"].timezone == "UTC" and scheds["daily"].next_run_at is not None

    mems = await rows(api, sa.select(agent_memories))
    by_ws: dict[str, list[Any]] = {}
    for m in mems:
        by_ws.setdefault(m.workspace_id, []).append(m)
    lead_mems = {(m.scope, m.content) for m in by_ws[lead]}
    assert ("TEAM", "token [REDACTED:SK_TOKEN]") in lead_mems  # scope upper-cased, secret redacted
    assert ("GLOBAL", "org wide [_MEMORY fact") in lead_mems  # forced GLOBAL, delimiter defused
    assert not any("bad scope" in c for _, c in lead_mems)
    assert {m.namespace for m in by_ws[lead]} == {f"workspace:{lead}"}
    assert [(m.scope, m.content) for m in by_ws[ids["Dev A"]]] == [("LOCAL", "default memory")]

    crypto = crypto_for(ctx_of(api).settings)
    secrets = {(s.workspace_id, s.key): s for s in await rows(api, sa.select(workspace_secrets))}
    lead_secret = secrets[(lead, "LEAD_KEY")]
    assert lead_secret.encryption_version == 1
    assert lead_secret.encrypted_value != b"lead value"
    assert crypto.decrypt(lead_secret.encrypted_value, lead_secret.encryption_version) == b"lead value"
    shared = secrets[(lead, "SHARED")]
    assert crypto.decrypt(shared.encrypted_value, shared.encryption_version) == b"from-lead"
    assert (lead, "EMPTY") not in secrets
    assert (ids["Dev A"], "ORG_KEY") in secrets and (ids["Dev A"], "LEAD_KEY") not in secrets


async def test_template_schedule_upsert_spares_runtime_rows(api: httpx.AsyncClient) -> None:
    r = await api.post("/workspaces", json={"name": "Solo", "external": True}, headers=AUTH)
    ws = r.json()["id"]
    made = await api.post(
        f"/workspaces/{ws}/schedules",
        json={"name": "mine", "cron_expr": "0 8 * * *", "prompt": "runtime prompt"},
        headers=AUTH,
    )
    assert made.status_code == 201, made.text
    engine = ctx_of(api).engine

    def values(name: str, prompt: str) -> dict[str, Any]:
        return {"name": name, "cron_expr": "0 9 * * *", "timezone": "UTC", "prompt": prompt, "enabled": True}

    async with engine.begin() as conn:
        await upsert_template_schedule(conn, ws, values("mine", "template prompt"))
        await upsert_template_schedule(conn, ws, values("tpl", "v1"))
    async with engine.begin() as conn:
        await upsert_template_schedule(conn, ws, values("tpl", "v2"))
    got = {s.name: (s.source, s.prompt) for s in await rows(api, sa.select(workspace_schedules))}
    assert got == {"mine": ("runtime", "runtime prompt"), "tpl": ("template", "v2")}


INCLUDE_ERRORS = {
    "escape": ("workspaces: !include ../../outside.yaml\n", {}),
    "absolute": ("workspaces: !include /etc/passwd\n", {}),
    "missing": ("workspaces: !include nope.yaml\n", {}),
    "empty": ("workspaces: !include empty.yaml\n", {"empty.yaml": ""}),
    "cycle": (
        "workspaces: !include a.yaml\n",
        {"a.yaml": "!include b.yaml\n", "b.yaml": "!include a.yaml\n"},
    ),
}


@pytest.mark.parametrize("case", sorted(INCLUDE_ERRORS))
async def test_include_errors(api: httpx.AsyncClient, org_root: Path, case: str) -> None:
    text, extra = INCLUDE_ERRORS[case]
    (org_root.parent / "outside.yaml").write_text("- name: Evil\n")
    d = write_org(org_root, "inc", "name: Inc\n" + text)
    for name, content in extra.items():
        (d / name).write_text(content)
    r = await do_import(api, {"dir": "inc", "force": True})
    assert (r.status_code, r.json()) == (400, {"error": "org template expansion failed"})


async def test_include_depth(api: httpx.AsyncClient, org_root: Path) -> None:
    def chain(n: int) -> None:
        d = write_org(org_root, f"deep{n}", "name: Deep\nworkspaces: !include parts/l1.yaml\n")
        (d / "parts").mkdir()
        for i in range(1, n):
            (d / "parts" / f"l{i}.yaml").write_text(f"!include l{i + 1}.yaml\n")
        (d / "parts" / f"l{n}.yaml").write_text("- name: Bottom\n")

    chain(16)
    chain(17)
    ok = await do_import(api, {"dir": "deep16"})
    assert ok.status_code == 201, ok.text
    assert [w["name"] for w in ok.json()["workspaces"]] == ["Bottom"]
    too_deep = await do_import(api, {"dir": "deep17"})
    assert (too_deep.status_code, too_deep.json()) == (400, {"error": "org template expansion failed"})


async def test_include_inside_root(api: httpx.AsyncClient, org_root: Path) -> None:
    d = write_org(org_root, "split", "name: Split\nworkspaces:\n  - !include teams/a.yaml\n")
    (d / "teams").mkdir()
    (d / "shared").mkdir()
    (d / "teams" / "a.yaml").write_text("name: A\nchildren: !include ../shared/kids.yaml\n")
    (d / "shared" / "kids.yaml").write_text("- name: Kid\n")
    listed = {i["dir"]: i for i in (await api.get("/org/templates", headers=AUTH)).json()}
    assert listed["split"]["workspaces"] == 2
    r = await do_import(api, {"dir": "split"})
    assert r.status_code == 201, r.text
    assert [w["name"] for w in r.json()["workspaces"]] == ["A", "Kid"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"dir": "../etc"}, 400, "invalid org directory"),
        ({"dir": "dev-team/../../x"}, 400, "invalid org directory"),
        ({"dir": "/etc"}, 400, "invalid org directory"),
        ({"dir": "nope"}, 404, "org template not found: nope"),
        ({"dir": "bad-yaml"}, 400, "invalid org template"),
        ({"dir": "bad-types"}, 400, "invalid org template"),
        ({}, 400, "provide 'dir' or 'template'"),
        ({"template": {"workspaces": [{"name": "x"}]}}, 400, "provide 'dir' or 'template'"),
        ({"dir": 5}, 400, "invalid request body"),
        ({"template": {"name": "T", "workspaces": "nope"}}, 400, "invalid request body"),
    ],
)
async def test_bad_requests(
    api: httpx.AsyncClient, org_root: Path, body: dict[str, Any], status: int, error: str
) -> None:
    write_org(org_root, "bad-yaml", "name: [unclosed\n")
    write_org(org_root, "bad-types", {"name": "T", "workspaces": [{"name": "A", "tier": "high"}]})
    r = await do_import(api, body)
    assert (r.status_code, r.json()) == (status, {"error": error})
    assert (await api.post("/org/import", content=b"{nope", headers=AUTH)).status_code == 400


async def test_symlink_escape_refused(api: httpx.AsyncClient, org_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    write_org(tmp_path, "elsewhere", {"name": "Out", "workspaces": [{"name": "X"}]})
    (org_root / "linked").symlink_to(outside)
    r = await do_import(api, {"dir": "linked"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid org directory"})
    listed = [i["dir"] for i in (await api.get("/org/templates", headers=AUTH)).json()]
    assert "linked" not in listed


async def test_node_error_is_207_and_keeps_created(api: httpx.AsyncClient) -> None:
    tmpl = {
        "name": "Partial",
        "workspaces": [
            {"name": "Root", "children": [{"name": "Bad", "workspace_dir": "/etc/x"}, {"name": "Never"}]},
        ],
    }
    r = await do_import(api, {"template": tmpl})
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["count"] == 1 and [w["name"] for w in body["workspaces"]] == ["Root"]
    assert body["error"] == "failed to create workspace 'Bad': invalid workspace directory"
    names = {row.name for row in await rows(api, sa.select(workspaces.c.name))}
    assert names == {"Root"}


async def test_workspace_dir_expansion(api: httpx.AsyncClient, org_root: Path, tmp_path: Path) -> None:
    d = write_org(
        org_root,
        "dirs",
        {
            "name": "Dirs",
            "workspaces": [{"name": "W", "workspace_dir": "${BASE}/repo", "workspace_access": "read_only"}],
        },
    )
    (d / ".env").write_text(f"BASE={tmp_path}\n")
    r = await do_import(api, {"dir": "dirs"})
    assert r.status_code == 201, r.text
    got = await rows(api, sa.select(workspaces.c.workspace_dir, workspaces.c.workspace_access))
    assert [(g.workspace_dir, g.workspace_access) for g in got] == [(f"{tmp_path}/repo", "read_only")]


async def test_hostile_shapes_never_500(api: httpx.AsyncClient, org_root: Path) -> None:
    huge_tier = {"name": "T", "workspaces": [{"name": "Ok"}, {"name": "Big", "tier": 2**40}]}
    r = await do_import(api, {"template": huge_tier})
    assert r.status_code == 207, r.text
    assert r.json()["error"] == "failed to create workspace 'Big': invalid workspace fields"

    deep: dict[str, Any] = {"name": "leaf"}
    for _ in range(80):
        deep = {"name": "n", "children": [deep]}
    write_org(org_root, "deep", {"name": "Deep", "workspaces": [deep]})
    r = await do_import(api, {"dir": "deep"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid org template"})

    bomb = "name: B\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"] * 10) + "]\n"
    write_org(org_root, "bomb", bomb)
    r = await do_import(api, {"dir": "bomb"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid org template"})
