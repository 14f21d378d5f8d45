"""`GET /templates` and `POST /templates/import` (spec 02 §4) over HTTP, on SQLite and Postgres."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import ClientFactory

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def write_template(configs: Path, name: str, config: str, extra: dict[str, str] | None = None) -> Path:
    d = configs / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(config)
    for rel, content in (extra or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(content)
    return d


async def admin_client(client_factory: ClientFactory) -> httpx.AsyncClient:
    return await client_factory(ADMIN_TOKEN=ADMIN)


async def test_list_templates_shape_order_and_skips(client_factory: ClientFactory, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    write_template(
        configs,
        "b-full",
        "name: Full\ndescription: all fields\ntier: 2\nruntime: echo\nskills: [a, b]\n"
        "runtime_config:\n  model: rc-model\n  required_env: [API_KEY]\n  provision_timeout_seconds: 120\n"
        "  models:\n    - id: m1\n      name: Model One\n      required_env: [K1]\n    - id: m2\n",
    )
    write_template(configs, "a-min", "name: Min\nmodel: legacy-top\n")
    write_template(configs, "c-broken", "name: [unclosed\n")
    write_template(configs, "d-wrongtype", "tier: three\n")
    (configs / "e-noconfig").mkdir()
    (configs / "stray.txt").write_text("not a dir")
    client = await admin_client(client_factory)

    resp = await client.get("/templates", headers=AUTH)

    assert resp.status_code == 200
    assert resp.json() == [
        {
            "id": "a-min",
            "name": "Min",
            "description": "",
            "tier": 0,
            "runtime": "",
            "model": "legacy-top",
            "skills": None,
            "skill_count": 0,
        },
        {
            "id": "b-full",
            "name": "Full",
            "description": "all fields",
            "tier": 2,
            "runtime": "echo",
            "model": "rc-model",
            "models": [{"id": "m1", "name": "Model One", "required_env": ["K1"]}, {"id": "m2"}],
            "required_env": ["API_KEY"],
            "skills": ["a", "b"],
            "skill_count": 2,
            "provision_timeout_seconds": 120,
        },
    ]
    assert b'"provision_timeout_seconds":120}' in resp.content  # compact JSON, integers stay integers


async def test_templates_need_admin_auth(client_factory: ClientFactory) -> None:
    client = await admin_client(client_factory)
    assert (await client.get("/templates")).json() == {"error": "admin auth required"}
    resp = await client.post(
        "/templates/import", json={"name": "x", "files": {}}, headers={"Authorization": "Bearer nope"}
    )
    assert (resp.status_code, resp.json()) == (401, {"error": "invalid admin auth token"})


async def test_list_templates_without_configs_dir_is_empty(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, CONFIGS_DIR=str(tmp_path / "absent"))
    resp = await client.get("/templates", headers=AUTH)
    assert (resp.status_code, resp.json()) == (200, [])


async def test_import_writes_files_0600_and_generates_config(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    client = await admin_client(client_factory)
    files = {
        "system-prompt.md": "You are helpful.",
        "skills/search/SKILL.md": "# Search",
        "notes/./a.txt": "n",
    }

    resp = await client.post("/templates/import", json={"name": "Agent v2.0", "files": files}, headers=AUTH)

    assert resp.status_code == 201
    assert resp.content == b'{"id":"agent-v20","name":"Agent v2.0","status":"imported"}'
    dest = tmp_path / "configs" / "agent-v20"
    assert (dest / "system-prompt.md").read_text() == "You are helpful."
    assert (dest / "notes" / "a.txt").read_text() == "n"
    for f in ("system-prompt.md", "skills/search/SKILL.md", "config.yaml"):
        assert stat.S_IMODE(os.stat(dest / f).st_mode) == 0o600
    config = yaml.safe_load((dest / "config.yaml").read_text())
    assert config["name"] == "Agent v2.0"
    assert config["prompt_files"] == ["system-prompt.md"] and config["skills"] == ["search"]
    assert "runtime" not in config
    listed = (await client.get("/templates", headers=AUTH)).json()
    assert [t["id"] for t in listed] == ["agent-v20"]
    assert listed[0]["skills"] == ["search"] and listed[0]["tier"] == 3


async def test_import_keeps_a_given_config_and_conflicts_on_the_second_import(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    client = await admin_client(client_factory)
    body: dict[str, Any] = {"name": "Mine", "files": {"config.yaml": "name: Mine\nruntime: echo\n"}}
    assert (await client.post("/templates/import", json=body, headers=AUTH)).status_code == 201
    assert (tmp_path / "configs" / "mine" / "config.yaml").read_text() == "name: Mine\nruntime: echo\n"

    again = await client.post(
        "/templates/import", json={"name": "MINE", "files": {"x.md": "new"}}, headers=AUTH
    )

    assert (again.status_code, again.json()) == (409, {"error": "template already exists", "id": "mine"})
    assert not (tmp_path / "configs" / "mine" / "x.md").exists()


async def test_import_traversal_names_stay_inside_configs(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    client = await admin_client(client_factory)
    resp = await client.post("/templates/import", json={"name": "../../hack", "files": {}}, headers=AUTH)
    assert resp.json()["id"] == "hack"
    assert (tmp_path / "configs" / "hack" / "config.yaml").is_file()
    resp = await client.post("/templates/import", json={"name": "../..", "files": {}}, headers=AUTH)
    assert resp.json()["id"] == "unnamed"
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == ["hack", "unnamed"]
    assert not (tmp_path / "hack").exists()


async def test_import_bad_paths_write_nothing(client_factory: ClientFactory, tmp_path: Path) -> None:
    client = await admin_client(client_factory)
    for bad in ("../../etc/evil", "/etc/evil", "a/../../b", "", ".", "clash", "C:\\x"):
        files = {"ok.md": "fine", bad: "x"}
        if bad == "clash":
            files = {"clash": "file", "clash/inner": "x"}
        resp = await client.post("/templates/import", json={"name": "victim", "files": files}, headers=AUTH)
        assert (resp.status_code, resp.json()) == (400, {"error": "invalid request body"}), bad
    assert not (tmp_path / "configs" / "victim").exists()
    assert not (tmp_path / "etc").exists()


async def test_import_body_errors(client_factory: ClientFactory, tmp_path: Path) -> None:
    client = await admin_client(client_factory)
    too_many = {f"f{i}.md": "" for i in range(201)}
    resp = await client.post("/templates/import", json={"name": "big", "files": too_many}, headers=AUTH)
    assert (resp.status_code, resp.json()) == (400, {"error": "too many files (201), max 200"})
    for body in (b"not json", b"[]", b'{"name":"x"}', b'{"files":{}}', b'{"name":"x","files":{"a":1}}'):
        resp = await client.post("/templates/import", content=body, headers=AUTH)
        assert (resp.status_code, resp.json()) == (400, {"error": "invalid request body"}), body
    exactly = {f"f{i}.md": "" for i in range(200)}
    resp = await client.post("/templates/import", json={"name": "edge", "files": exactly}, headers=AUTH)
    assert resp.status_code == 201
    assert len(list((tmp_path / "configs" / "edge").iterdir())) == 201  # + the generated config.yaml
