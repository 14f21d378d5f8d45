"""Bundles: POST /bundles/import and GET /bundles/export/:id (AdminAuth; spec 06 §3.4)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import structure_events, workspaces
from workspace_server.workspaces.files import workspace_config_dir
from workspace_server.workspaces.service import NO_BACKEND_REASON
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}

SKILL_MD = "---\nname: research\n---\n# Research\n\nDig up sources and summarise them.\n"

BUNDLE: dict[str, Any] = {
    "schema": "1.0",
    "id": "bundle-src-1",
    "name": "Team Lead",
    "description": "Leads the team",
    "tier": 2,
    "model": "",
    "system_prompt": "You lead.\n",
    "skills": [
        {
            "id": "research",
            "name": "research",
            "description": "Dig up sources and summarise them.",
            "files": {"SKILL.md": SKILL_MD, "scripts/run.py": "print('hi')\n", "ünï.txt": "ü\n"},
        }
    ],
    "tools": [],
    "prompts": {"config.yaml": "name: Team Lead\nruntime: claude-code\nruntime_config:\n  timeout: 0\n"},
    "sub_workspaces": [
        {
            "schema": "1.0",
            "id": "bundle-src-2",
            "name": "Writer",
            "description": "",
            "tier": 1,
            "model": "",
            "system_prompt": "You write.",
            "skills": [],
            "tools": [],
            "prompts": {},
            "sub_workspaces": [
                {
                    "schema": "1.0",
                    "id": "bundle-src-3",
                    "name": "Editor",
                    "description": "Edits",
                    "tier": 3,
                    "model": "",
                    "system_prompt": "",
                    "skills": [
                        {
                            "id": "proof",
                            "name": "proof",
                            "description": "",
                            "files": {"SKILL.md": "# only a heading\n"},
                        }
                    ],
                    "tools": [],
                    "prompts": {"config.yaml": "name: Editor\n"},
                    "sub_workspaces": [],
                    "agent_card": None,
                    "author": "",
                    "version": "1.0.0",
                }
            ],
            "agent_card": None,
            "author": "",
            "version": "1.0.0",
        },
        {
            "schema": "1.0",
            "id": "bundle-src-4",
            "name": "Researcher",
            "description": "Finds things",
            "tier": 1,
            "model": "",
            "system_prompt": "You research.",
            "skills": [],
            "tools": [],
            "prompts": {},
            "sub_workspaces": [],
            "agent_card": None,
            "author": "",
            "version": "1.0.0",
        },
    ],
    "agent_card": None,
    "author": "",
    "version": "1.0.0",
}


def engine_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx.engine  # type: ignore[attr-defined]


def settings_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx.settings  # type: ignore[attr-defined]


async def ws_rows(client: httpx.AsyncClient) -> dict[str, Any]:
    async with engine_of(client).connect() as conn:
        return {r.id: r for r in (await conn.execute(sa.select(workspaces))).all()}


async def events(client: httpx.AsyncClient, ws_id: str) -> list[tuple[str, Any]]:
    e = structure_events
    async with engine_of(client).connect() as conn:
        rows = await conn.execute(
            sa.select(e.c.event_type, e.c.payload).where(e.c.workspace_id == ws_id).order_by(e.c.created_at)
        )
        return [(r.event_type, r.payload) for r in rows]


def ids_of(result: dict[str, Any]) -> list[str]:
    out = [result["workspace_id"]]
    for child in result.get("children", []):
        out += ids_of(child)
    return out


def comparable(bundle: dict[str, Any]) -> dict[str, Any]:
    """What an export must reproduce of an imported bundle (ids are new; names of skills = their ids)."""
    keep = {k: bundle[k] for k in ("name", "description", "tier", "system_prompt", "prompts")}
    keep["skills"] = [
        {"id": s["id"], "name": s["id"], "description": s["description"], "files": s["files"]}
        for s in bundle["skills"]
    ]
    keep["sub_workspaces"] = [comparable(sub) for sub in bundle["sub_workspaces"]]
    return keep


async def test_import_then_export_round_trip(client_factory: ClientFactory, tmp_path: Path) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await client.post("/bundles/import", json=BUNDLE, headers=AUTH)
    assert r.status_code == 201
    result = r.json()
    assert list(result) == ["workspace_id", "name", "status", "children"]
    assert result["name"] == "Team Lead"
    assert [c["name"] for c in result["children"]] == ["Writer", "Researcher"]
    assert [c["name"] for c in result["children"][0]["children"]] == ["Editor"]
    assert "children" not in result["children"][1]  # omitted when empty
    all_ids = ids_of(result)
    assert len(set(all_ids)) == 4

    # rows: hierarchy, role, tier, provenance and runtime from the config's `runtime:`
    rows = await ws_rows(client)
    root, writer, editor, researcher = (rows[i] for i in all_ids)
    assert (root.role, root.tier, root.parent_id, root.source_bundle_id) == (
        "Leads the team",
        2,
        None,
        "bundle-src-1",
    )
    assert root.runtime == "claude-code" and writer.runtime == "langgraph" and editor.runtime == "langgraph"
    assert writer.role is None  # "" is stored as NULL
    assert (writer.parent_id, editor.parent_id, researcher.parent_id) == (root.id, writer.id, root.id)
    assert root.awareness_namespace == f"workspace:{root.id}"

    # no backend in tests: each node was failed fast with the create flow's reason, and the events say so
    for ws_id in all_ids:
        assert rows[ws_id].status == "failed"
        assert rows[ws_id].last_sample_error == NO_BACKEND_REASON
        kinds = await events(client, ws_id)
        assert [k for k, _ in kinds] == ["WORKSPACE_PROVISIONING", "WORKSPACE_PROVISION_FAILED"]
    assert (await events(client, root.id))[0][1] == {
        "name": "Team Lead",
        "tier": 2,
        "source_bundle_id": "bundle-src-1",
    }

    # files landed in each workspace's config dir
    root_dir = workspace_config_dir(settings_of(client), root.id)
    assert (root_dir / "system-prompt.md").read_text() == "You lead.\n"
    assert (root_dir / "skills/research/scripts/run.py").read_text() == "print('hi')\n"
    assert not (workspace_config_dir(settings_of(client), researcher.id) / "config.yaml").exists()

    r = await client.get(f"/bundles/export/{root.id}", headers=AUTH)
    assert r.status_code == 200
    exported = r.json()
    assert list(exported) == [
        "schema", "id", "name", "description", "tier", "model", "system_prompt", "skills", "tools",
        "prompts", "sub_workspaces", "agent_card", "author", "version",
    ]  # fmt: skip
    assert (exported["schema"], exported["id"], exported["version"]) == ("1.0", root.id, "1.0.0")
    assert exported["agent_card"] is None and exported["tools"] == [] and exported["model"] == ""
    assert comparable(exported) == comparable(BUNDLE)
    assert [s["id"] for s in exported["sub_workspaces"]] == [writer.id, researcher.id]

    # and the export imports again into an identical tree
    r = await client.post("/bundles/import", json=exported, headers=AUTH)
    assert r.status_code == 201
    again = (await client.get(f"/bundles/export/{r.json()['workspace_id']}", headers=AUTH)).json()
    assert comparable(again) == comparable(BUNDLE)
    assert (await ws_rows(client))[r.json()["workspace_id"]].source_bundle_id == root.id


async def test_export_skips_removed_children_and_404s(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    result = (await client.post("/bundles/import", json=BUNDLE, headers=AUTH)).json()
    root, writer = result["workspace_id"], result["children"][0]["workspace_id"]
    async with engine_of(client).begin() as conn:
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == writer).values(status="removed"))
    exported = (await client.get(f"/bundles/export/{root}", headers=AUTH)).json()
    assert [s["name"] for s in exported["sub_workspaces"]] == ["Researcher"]

    for bad in (new_id(), "not-a-uuid", "ws-123", "..%2e"):
        r = await client.get(f"/bundles/export/{bad}", headers=AUTH)
        assert r.status_code == 404
        assert r.json() == {"error": "bundle not found"}


async def test_export_from_template_by_name_not_an_unrelated_one(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    configs = tmp_path / "configs"
    for sub, name, prompt in (("aaa-first", "Someone Else", "wrong"), ("bbb", "Analyst", "right")):
        (configs / sub / "skills" / "s1").mkdir(parents=True)
        (configs / sub / "config.yaml").write_text(f"name: {name}\n")
        (configs / sub / "system-prompt.md").write_text(prompt)
        (configs / sub / "skills" / "s1" / "SKILL.md").write_text(f"{prompt} skill\n")
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    named, unnamed = new_id(), new_id()
    async with engine_of(client).begin() as conn:
        await insert_workspace(conn, id=named, name="Analyst", status="online")
        await insert_workspace(conn, id=unnamed, name="Nobody", status="online")
        await conn.execute(sa.update(workspaces).where(workspaces.c.id == named).values(agent_card={"n": 1}))

    exported = (await client.get(f"/bundles/export/{named}", headers=AUTH)).json()
    assert exported["system_prompt"] == "right"
    assert exported["prompts"] == {"config.yaml": "name: Analyst\n"}
    assert exported["skills"] == [
        {"id": "s1", "name": "s1", "description": "right skill", "files": {"SKILL.md": "right skill\n"}}
    ]
    assert exported["agent_card"] == {"n": 1}
    # DECIDE: no "first template" fallback — a workspace no template names exports no foreign content
    other = (await client.get(f"/bundles/export/{unnamed}", headers=AUTH)).json()
    assert (other["system_prompt"], other["prompts"], other["skills"]) == ("", {}, [])
    # …but the runtime's default template (what a template-less create starts from) is used
    (configs / "langgraph-default").mkdir()
    (configs / "langgraph-default" / "config.yaml").write_text("name: default\nruntime: langgraph\n")
    other = (await client.get(f"/bundles/export/{unnamed}", headers=AUTH)).json()
    assert other["prompts"] == {"config.yaml": "name: default\nruntime: langgraph\n"}


async def test_export_never_follows_symlinks_out_of_the_config_dir(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST SECRET")
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "SKILL.md").write_text("HOST SECRET TOO")
    ws = (await client.post("/bundles/import", json={"name": "solo"}, headers=AUTH)).json()["workspace_id"]
    cfg = workspace_config_dir(settings_of(client), ws)
    # what an agent inside the workspace could plant in its /configs
    (cfg / "skills" / "leak").mkdir(parents=True)
    os.symlink(secret, cfg / "system-prompt.md")
    os.symlink(secret, cfg / "skills" / "leak" / "SKILL.md")
    os.symlink(outside, cfg / "skills" / "linked")
    os.mkfifo(cfg / "config.yaml")  # must not hang the export

    r = await client.get(f"/bundles/export/{ws}", headers=AUTH)
    assert r.status_code == 200
    assert "HOST SECRET" not in r.text
    body = r.json()
    assert body["system_prompt"] == "" and body["prompts"] == {}
    assert body["skills"] == [{"id": "leak", "name": "leak", "description": "", "files": {}}]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b["skills"][0].update(id="../escape"),
        lambda b: b["skills"][0].update(id="/abs"),
        lambda b: b["skills"][0].update(id="a/b"),
        lambda b: b["skills"][0].update(id=".."),
        lambda b: b["skills"][0].update(id=""),
        lambda b: b["skills"][0]["files"].update({"../../../escape.txt": "x"}),
        lambda b: b["skills"][0]["files"].update({"/tmp/escape.txt": "x"}),
        lambda b: b["skills"][0]["files"].update({"ok/../../../escape.txt": "x"}),
        lambda b: b["skills"][0]["files"].update({"a//b": "x"}),
        lambda b: b["skills"][0]["files"].update({"a\\..\\b": "x"}),
        lambda b: b["skills"][0]["files"].update({"": "x"}),
        lambda b: b["skills"][0]["files"].update({"scripts": "a file where a dir must be"}),
        # deep in the tree: the whole bundle is still refused before anything is created
        lambda b: b["sub_workspaces"][0]["sub_workspaces"][0]["skills"][0].update(id="../../../x"),
    ],
)
async def test_traversal_refused_and_nothing_written(
    client_factory: ClientFactory, tmp_path: Path, mutate: Any
) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    bundle = copy.deepcopy(BUNDLE)
    mutate(bundle)
    before = sorted(p for p in tmp_path.rglob("*") if "ws.db" not in p.name)
    r = await client.post("/bundles/import", json=bundle, headers=AUTH)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid bundle"}
    assert await ws_rows(client) == {}
    after = sorted(p for p in tmp_path.rglob("*") if "ws.db" not in p.name)
    assert after == before
    assert not Path("/tmp/escape.txt").exists()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b"null",
        b'{"name": "x", "tier": "3"}',
        b'{"name": "x", "tier": 1.5}',
        b'{"name": "x", "tier": true}',
        b'{"name": "x", "tier": 4294967296}',
        b'{"name": 5}',
        b'{"name": "x", "skills": {"id": "a"}}',
        b'{"name": "x", "prompts": {"config.yaml": 1}}',
        b'{"name": ""}',
        b'{"name": "a\\u0000b"}',
        b'{"name": "x", "sub_workspaces": [{"name": ""}]}',
        b'{"name": "x", "sub_workspaces": [' * 40 + b'{"name": "y"}' + b"]}" * 40,
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
async def test_invalid_bundles_are_400(client_factory: ClientFactory, body: bytes) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await client.post("/bundles/import", content=body, headers=AUTH)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid bundle"}
    assert await ws_rows(client) == {}


async def test_nulls_and_unknown_keys_are_tolerated(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    body = {"name": "n", "skills": None, "prompts": None, "tier": None, "extra": {"x": 1}, "agent_card": 5}
    r = await client.post("/bundles/import", json=body, headers=AUTH)
    assert r.status_code == 201
    row = (await ws_rows(client))[r.json()["workspace_id"]]
    assert (row.name, row.tier, row.source_bundle_id, row.runtime) == ("n", 3, None, "langgraph")


async def test_insert_failure_is_a_failed_node_with_a_generic_error(client_factory: ClientFactory) -> None:
    """The DB refuses one node (a trigger): that node fails, its subtree is skipped, no text leaks."""
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    eng = engine_of(client)
    if eng.dialect.name == "sqlite":
        create = [
            "CREATE TRIGGER refuse_ws BEFORE INSERT ON workspaces WHEN NEW.name = 'Writer' "
            "BEGIN SELECT RAISE(ABORT, 'secret-driver-detail'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse_ws"]
    else:
        create = [
            "CREATE FUNCTION refuse_ws() RETURNS trigger AS $$ BEGIN IF NEW.name = 'Writer' THEN "
            "RAISE EXCEPTION 'secret-driver-detail'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_ws BEFORE INSERT ON workspaces FOR EACH ROW EXECUTE FUNCTION refuse_ws()",
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse_ws ON workspaces", "DROP FUNCTION IF EXISTS refuse_ws()"]
    async with eng.begin() as conn:
        for stmt in create:
            await conn.execute(sa.text(stmt))
    try:
        r = await client.post("/bundles/import", json=BUNDLE, headers=AUTH)
    finally:
        async with eng.begin() as conn:
            for stmt in drop:
                await conn.execute(sa.text(stmt))
    assert r.status_code == 201
    assert "secret-driver-detail" not in r.text
    writer, researcher = r.json()["children"]
    assert writer == {
        "workspace_id": writer["workspace_id"],
        "name": "Writer",
        "status": "failed",
        "error": "failed to create workspace record",
    }
    assert researcher["status"] == "provisioning" and "error" not in researcher
    names = {row.name for row in (await ws_rows(client)).values()}
    assert names == {"Team Lead", "Researcher"}  # Writer and its child Editor were not created


async def test_unwritable_data_dir_fails_the_node_with_a_reason(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    data = Path(settings_of(client).DATA_DIR)
    data.mkdir(parents=True, exist_ok=True)
    (data / "workspaces").write_text("a file where the workspaces dir belongs")
    r = await client.post("/bundles/import", json={"name": "solo", "system_prompt": "x"}, headers=AUTH)
    assert r.status_code == 201
    body = r.json()
    assert (body["status"], body["error"]) == ("failed", "failed to write workspace config files")
    row = (await ws_rows(client))[body["workspace_id"]]
    assert (row.status, row.last_sample_error) == ("failed", "failed to write workspace config files")
    assert [k for k, _ in await events(client, row.id)] == [
        "WORKSPACE_PROVISIONING",
        "WORKSPACE_PROVISION_FAILED",
    ]


async def test_bundle_routes_are_admin_only(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = new_id()
    async with engine_of(client).begin() as conn:
        await insert_workspace(conn, id=ws, name="w", status="online")
        tok = await issue_workspace_token(conn, ws)
    for headers in ({}, {"Authorization": f"Bearer {tok}"}):
        r = await client.get(f"/bundles/export/{ws}", headers=headers)
        assert r.status_code == 401
        r = await client.post("/bundles/import", json=BUNDLE, headers=headers)
        assert r.status_code == 401
    assert set(await ws_rows(client)) == {ws}
