"""Org import applies each node's config on a real backend (spec 06 §3.5 step 6, issue 13 §2): files_dir,
system prompt, the config.yaml blocks and registry plugins land in the workspace's /configs before its
first start, on the process backend and on Docker, and the agent comes online with them. What cannot be
applied (a missing plugin, an escaping prompt file) is reported per node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.orchestrator_support import (
    Platform,
    PlatformFactory,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from tests.integration.provisioner_support import docker_client, need_agent_image
from tests.integration.test_plugins import PLUGIN_YAML, make_plugin
from workspace_server.orgs.node_config import NOT_FOUND, UNREADABLE

PROMPT = "line one\n  indented\nevil: injected\n\u2028also: injected"
ORG: dict[str, Any] = {
    "name": "Applied",
    "defaults": {
        "runtime": "echo",
        "tier": 2,
        "plugins": ["alpha", "ghost"],
        "initial_prompt": "default start",
        "category_routing": {"bugs": ["Dev"], "ops": ["Lead"]},
    },
    "workspaces": [
        {
            "name": "Lead",
            "files_dir": "lead",
            "system_prompt": "You lead.",
            "initial_prompt": PROMPT,
            "idle_prompt_file": "idle.md",
            "idle_interval_seconds": 120,
            "plugins": ["-ghost", "beta"],
            "category_routing": {"bugs": [], "docs": ["Writer"]},
            "children": [{"name": "Dev", "initial_prompt_file": "../../outside.md"}],
        }
    ],
}


def write_org(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir(exist_ok=True)  # org-templates is found beside CONFIGS_DIR
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    make_plugin(plugins, "alpha")
    make_plugin(plugins, "beta")
    team = tmp_path / "org-templates" / "applied"
    (team / "lead").mkdir(parents=True)
    (team / "org.yaml").write_text(yaml.safe_dump(ORG), encoding="utf-8")
    (team / "lead" / "CLAUDE.md").write_text("# Lead rules\n", encoding="utf-8")
    (team / "lead" / "idle.md").write_text("  look around  \n\n", encoding="utf-8")
    (team / "lead" / ".env").write_text("LEAD_SECRET=s3cret\n", encoding="utf-8")
    (team / "lead" / "passwd").symlink_to("/etc/passwd")
    (tmp_path / "outside.md").write_text("outside the template", encoding="utf-8")


async def read(p: Platform, wid: str, path: str) -> str | None:
    r = await p.http.get(f"/workspaces/{wid}/files/{path}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return str(r.json()["content"])


async def import_and_check(p: Platform) -> None:
    r = await p.http.post("/org/import", json={"dir": "applied"})
    assert r.status_code == 201, r.text
    lead, dev = r.json()["workspaces"]
    p.ids += [lead["id"], dev["id"]]
    assert "plugins_skipped" not in lead and "config_skipped" not in lead
    assert dev["plugins_skipped"] == [{"plugin": "ghost", "reason": NOT_FOUND, "workspace": "Dev"}]
    assert dev["config_skipped"] == [{"key": "initial_prompt_file", "reason": UNREADABLE, "workspace": "Dev"}]
    for w in (lead, dev):
        await p.wait_status(w["id"], "online")

    config = yaml.safe_load(await read(p, lead["id"], "config.yaml") or "")
    assert config["name"] == "Lead" and config["runtime"] == "echo"  # the generated base stays
    assert config["initial_prompt"] == PROMPT + "\n"  # nothing in the prompt became a key
    assert "evil" not in config and "also" not in config
    assert (config["idle_prompt"], config["idle_interval_seconds"]) == ("look around\n", 120)
    assert config["category_routing"] == {"docs": ["Writer"], "ops": ["Lead"]}
    assert await read(p, lead["id"], "system-prompt.md") == "You lead."
    assert await read(p, lead["id"], "CLAUDE.md") == "# Lead rules\n"
    assert await read(p, lead["id"], ".env") is None  # its values are secrets, not a config file
    assert await read(p, lead["id"], "passwd") is None  # symlinks are not followed
    assert await read(p, lead["id"], "plugins/alpha/plugin.yaml") == PLUGIN_YAML.decode()
    assert await read(p, lead["id"], "plugins/beta/skills/helper/SKILL.md") == "# Helper\n"
    assert await read(p, lead["id"], "plugins/ghost/plugin.yaml") is None
    installed = (await p.http.get(f"/workspaces/{lead['id']}/plugins")).json()
    assert sorted(i["name"] for i in installed) == ["alpha", "beta"]

    dev_config = yaml.safe_load(await read(p, dev["id"], "config.yaml") or "")
    assert dev_config["initial_prompt"] == "default start\n"  # the escaping file fell back to defaults
    assert dev_config["category_routing"] == {"bugs": ["Dev"], "ops": ["Lead"]}
    assert "idle_prompt" not in dev_config and "idle_interval_seconds" not in dev_config
    assert await read(p, dev["id"], "plugins/alpha/plugin.yaml") == PLUGIN_YAML.decode()


async def test_org_import_applies_config_on_process_backend(
    platform_factory: PlatformFactory, tmp_path: Path
) -> None:
    write_org(tmp_path)
    await import_and_check(await platform_factory("process"))


@pytest.mark.docker
async def test_org_import_applies_config_on_docker_backend(
    platform_factory: PlatformFactory, tmp_path: Path
) -> None:
    client = docker_client()
    try:
        need_agent_image(client)
    finally:
        client.close()
    write_org(tmp_path)
    await import_and_check(await platform_factory("docker"))
