"""Provision failures and config sources on the process backend: the required_env preflight (exact
messages, `missing` in the event), a template that failed before its first start applied on the next
one, decrypt and mutator failures with generic messages, and restart template rules.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from tests.integration.orchestrator_support import (
    Platform,
    PlatformFactory,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
    write_template,
)
from workspace_server.db.engine import make_engine
from workspace_server.db.schema import workspace_secrets
from workspace_server.provisioner.hooks import MutatorRegistry, ProvisionInfo


def configs(p: Platform) -> Path:
    return Path(p.settings.CONFIGS_DIR)


def volume_config(p: Platform, wid: str) -> dict[str, Any]:
    path = Path(p.settings.DATA_DIR).resolve() / "workspaces" / wid / "configs" / "config.yaml"
    return dict(yaml.safe_load(path.read_text()))


async def failure(p: Platform, wid: str) -> tuple[str, dict[str, Any]]:
    await p.wait_status(wid, "failed")
    row = await p.listed(wid)
    event = [pl for t, pl in await p.events(wid) if t == "WORKSPACE_PROVISION_FAILED"][-1]
    return row["last_sample_error"], event


async def test_required_env_preflight_then_template_applied_once_keys_arrive(
    platform_factory: PlatformFactory,
) -> None:
    p: Platform = await platform_factory("process")
    rc = {"required_env": ["API_KEY", "OTHER_KEY"]}
    write_template(configs(p), "needs-keys", {"name": "Needs Keys", "runtime": "echo", "runtime_config": rc})
    write_template(configs(p), "needs-one", {"name": "One", "runtime_config": {"required_env": ["SOLO"]}})

    wid = await p.create("Keyed Agent", template="needs-keys", secrets={"API_KEY": ""})
    message, event = await failure(p, wid)
    plural = (
        "missing required env vars API_KEY, OTHER_KEY — add them under Config → Env Vars "
        "(or as Global secrets) and retry"
    )
    assert message == plural  # an empty value counts as missing
    assert event == {"error": plural, "missing": ["API_KEY", "OTHER_KEY"]}

    one = await p.create("Solo Agent", template="needs-one")
    message, event = await failure(p, one)
    single = (
        'missing required env var "SOLO" — add it under Config → Env Vars (or as a Global secret) and retry'
    )
    assert (message, event["missing"]) == (single, ["SOLO"])

    # each secret change restarts the workspace; once both are there it starts with the template
    for key in ("API_KEY", "OTHER_KEY"):
        r = await p.http.post(f"/workspaces/{wid}/secrets", json={"key": key, "value": "set"})
        assert r.status_code == 200, r.text
    await p.wait_status(wid, "online", fail_fast=False)
    assert volume_config(p, wid)["name"] == "Needs Keys"


async def test_decrypt_and_mutator_failures_are_generic(
    platform_factory: PlatformFactory, db_url: str
) -> None:
    p: Platform = await platform_factory("process")
    wid = await p.create("Secretive", secrets={"TOKEN": "plain"})
    await p.wait_status(wid, "online")

    engine = make_engine(db_url)  # a stored value nobody can decrypt (no key configured here)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(workspace_secrets)
                .where(workspace_secrets.c.workspace_id == wid)
                .values(encryption_version=1, encrypted_value=b"\x00" * 40)
            )
    finally:
        await engine.dispose()
    r = await p.http.post(f"/workspaces/{wid}/restart")
    assert r.status_code == 200
    message, event = await failure(p, wid)
    assert (message, event) == (
        "failed to decrypt workspace secret",
        {"error": "failed to decrypt workspace secret"},
    )

    class Broken:
        name = "broken"

        async def mutate_env(self, ws_id: str, env: dict[str, str], info: ProvisionInfo | None) -> None:
            raise RuntimeError("vault at /srv/secret-path is down")

    chain = MutatorRegistry()
    chain.register(Broken())
    p.ctx.orchestrator.mutators = chain
    other = await p.create("Mutated")
    message, event = await failure(p, other)
    assert (message, event) == (
        "plugin env mutator chain failed",
        {"error": "plugin env mutator chain failed"},
    )


async def test_restart_template_rules_never_overwrite_a_plain_restart(
    platform_factory: PlatformFactory,
) -> None:
    p: Platform = await platform_factory("process")
    write_template(configs(p), "echo-default", {"name": "Echo Default", "runtime": "echo"})
    write_template(configs(p), "special", {"name": "Special", "runtime": "echo"})
    write_template(configs(p), "named-agent", {"name": "Named Agent", "runtime": "echo"})

    wid = await p.create("Named Agent")
    await p.wait_status(wid, "online")
    generated = volume_config(p, wid)
    assert (generated["name"], generated["runtime"]) == ("Named Agent", "echo")
    path = Path(p.settings.DATA_DIR).resolve() / "workspaces" / wid / "configs" / "config.yaml"
    path.write_text("name: Edited By User\nruntime: echo\n")

    async def restart(body: dict[str, Any] | None) -> dict[str, Any]:
        r = await p.http.post(f"/workspaces/{wid}/restart", json=body)
        assert r.status_code == 200, r.text
        await p.wait_status(wid, "online")  # the row went provisioning before the answer
        return dict(r.json())

    async def config_name_becomes(expected: str) -> None:
        # a heartbeat from the instance being replaced can flip the row online before the new config
        # lands, so wait (bounded) for the config itself rather than trusting the status alone
        for _ in range(150):
            if volume_config(p, wid)["name"] == expected:
                return
            await asyncio.sleep(0.2)
        assert volume_config(p, wid)["name"] == expected

    assert (await restart(None))["config_dir"] == "existing-volume"
    assert volume_config(p, wid)["name"] == "Edited By User"  # a plain restart keeps user edits
    assert (await restart({"apply_template": True}))["config_dir"] == "named-agent"
    await config_name_becomes("Named Agent")
    assert (await restart({"template": "special", "apply_template": True}))["config_dir"] == "special"
    await config_name_becomes("Special")
    assert (await restart({"template": "../escape"}))["config_dir"] == "existing-volume"
