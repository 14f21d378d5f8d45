"""POST /workspaces, GET /workspaces and GET /workspaces/:id (spec 01 §3, §4.1, §5; spec 07 §3)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from workspace_server.common.kv import url_key
from workspace_server.db.schema import canvas_layouts, structure_events, workspace_secrets, workspaces
from workspace_server.secrets.crypto import SecretsCrypto
from workspace_server.workspaces import store
from workspace_server.workspaces.schemas import ProvisionSpec
from workspace_server.workspaces.service import NO_BACKEND_EVENT_ERROR, NO_BACKEND_REASON

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def admin_client(client_factory: Any, **overrides: Any) -> httpx.AsyncClient:
    return await client_factory(ADMIN_TOKEN=ADMIN, **overrides)


def ctx_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


async def row(client: httpx.AsyncClient, ws_id: str) -> Any:
    async with ctx_of(client).engine.connect() as conn:
        return (await conn.execute(sa.select(workspaces).where(workspaces.c.id == ws_id))).first()


async def events(client: httpx.AsyncClient, ws_id: str) -> list[tuple[str, Any]]:
    e = structure_events
    async with ctx_of(client).engine.connect() as conn:
        rows = await conn.execute(
            sa.select(e.c.event_type, e.c.payload).where(e.c.workspace_id == ws_id).order_by(e.c.created_at)
        )
        return [(r.event_type, r.payload) for r in rows]


async def create(client: httpx.AsyncClient, body: Any, **kw: Any) -> httpx.Response:
    if isinstance(body, str | bytes):
        return await client.post("/workspaces", content=body, headers=AUTH, **kw)
    return await client.post("/workspaces", json=body, headers={**AUTH, **kw.pop("headers", {})}, **kw)


class FakeProvisioner:
    def __init__(self) -> None:
        self.specs: list[ProvisionSpec] = []
        self.called = asyncio.Event()

    async def provision(self, spec: ProvisionSpec) -> None:
        self.specs.append(spec)
        self.called.set()

    async def stop(self, ws_id: str) -> None:
        return None


async def test_create_without_backend_fails_fast_with_reason(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    r = await create(client, {"name": "alpha"})
    assert r.status_code == 201
    ws_id = r.json()["id"]
    expected = {
        "awareness_namespace": f"workspace:{ws_id}",
        "id": ws_id,
        "status": "provisioning",
        "workspace_access": "none",
    }
    assert r.text == json.dumps(expected, separators=(",", ":"))

    w = await row(client, ws_id)
    assert (w.status, w.tier, w.runtime, w.workspace_access, w.max_concurrent_tasks) == (
        "failed",
        3,
        "langgraph",
        "none",
        1,
    )
    assert w.budget_limit is None and w.role is None and w.awareness_namespace == f"workspace:{ws_id}"
    assert w.last_sample_error == NO_BACKEND_REASON
    assert w.last_sample_error.startswith("Docker not available")
    assert await events(client, ws_id) == [
        ("WORKSPACE_PROVISIONING", {"name": "alpha", "tier": 3, "runtime": "langgraph"}),
        ("WORKSPACE_PROVISION_FAILED", {"error": NO_BACKEND_EVENT_ERROR}),
    ]
    cfg = await client.get(f"/workspaces/{ws_id}/config", headers=AUTH)
    assert cfg.json() == {"data": {"name": "alpha", "runtime": "langgraph", "tier": 3, "template": ""}}


async def test_list_and_get_shapes(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    ws_id = (await create(client, {"name": "alpha", "canvas": {"x": 10, "y": 2.5}})).json()["id"]

    listed = await client.get("/workspaces", headers=AUTH)
    assert listed.status_code == 200
    assert listed.json() == [
        {
            "active_tasks": 0,
            "agent_card": None,
            "budget_limit": None,
            "collapsed": False,
            "current_task": "",
            "id": ws_id,
            "last_error_rate": 0,
            "last_sample_error": NO_BACKEND_REASON,
            "max_concurrent_tasks": 1,
            "monthly_spend": 0,
            "name": "alpha",
            "parent_id": None,
            "role": None,
            "runtime": "langgraph",
            "status": "failed",
            "tier": 3,
            "uptime_seconds": 0,
            "url": "",
            "workspace_dir": None,
            "x": 10,
            "y": 2.5,
        }
    ]
    assert '"x":10,' in listed.text and '"last_error_rate":0,' in listed.text  # Go float64 rendering

    got = await client.get(f"/workspaces/{ws_id}")  # OPEN: no auth needed
    assert got.status_code == 200
    body = got.json()
    for hidden in ("budget_limit", "monthly_spend", "current_task", "last_sample_error", "workspace_dir"):
        assert hidden not in body
    assert body["last_outbound_at"] is None
    assert body["x"] == 10 and body["y"] == 2.5 and body["agent_card"] is None and body["status"] == "failed"
    assert list(body) == sorted(body)


async def test_list_requires_admin_and_orders_by_creation(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    assert (await client.get("/workspaces")).json() == {"error": "admin auth required"}
    ids = [(await create(client, {"name": f"w{i}"})).json()["id"] for i in range(3)]
    assert [w["id"] for w in (await client.get("/workspaces", headers=AUTH)).json()] == ids


async def test_create_defaults_and_explicit_values(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    parent = (await create(client, {"name": "parent"})).json()["id"]
    r = await create(
        client,
        {
            "name": "child",
            "role": "does things",
            "tier": 2,
            "runtime": "claude-code",
            "parent_id": parent,
            "budget_limit": 700,
            "max_concurrent_tasks": 3,
            "workspace_dir": "/home/me/proj",
            "workspace_access": "read_write",
            "initial_memories": [{"content": "remember", "scope": "local"}],
        },
    )
    assert r.status_code == 201 and r.json()["workspace_access"] == "read_write"
    w = await row(client, r.json()["id"])
    assert (w.role, w.tier, w.runtime, w.parent_id, w.budget_limit, w.max_concurrent_tasks) == (
        "does things",
        2,
        "claude-code",
        parent,
        700,
        3,
    )
    assert (w.workspace_dir, w.workspace_access) == ("/home/me/proj", "read_write")

    r2 = await create(client, {"name": "zero", "tier": 0, "max_concurrent_tasks": -4})
    w2 = await row(client, r2.json()["id"])
    assert (w2.tier, w2.max_concurrent_tasks) == (3, 1)
    async with ctx_of(client).engine.connect() as conn:
        layout = (
            await conn.execute(sa.select(canvas_layouts).where(canvas_layouts.c.workspace_id == w2.id))
        ).first()
    assert (layout.x, layout.y, layout.collapsed) == (0, 0, False)


async def test_template_fills_runtime_and_model(client_factory: Any, tmp_path: Path) -> None:
    tpl = tmp_path / "configs" / "hermes-tpl"
    tpl.mkdir(parents=True)
    (tpl / "config.yaml").write_text(
        'name: Hermes\nruntime: hermes\nruntime_config:\n  model: "openai/gpt-4o"\n'
        "  provision_timeout_seconds: 900\n"
    )
    client = await admin_client(client_factory)
    fake = FakeProvisioner()
    ctx_of(client).provisioner = fake

    r = await create(client, {"name": "h", "template": "hermes-tpl"})
    assert r.status_code == 201
    await asyncio.wait_for(fake.called.wait(), 10)
    spec = fake.specs[0]
    assert (spec.runtime, spec.model, spec.template_path) == ("hermes", "openai/gpt-4o", tpl)
    w = await row(client, r.json()["id"])
    assert (w.runtime, w.status) == ("hermes", "provisioning")  # the backend owns what happens next
    assert ("WORKSPACE_PROVISION_FAILED", {"error": NO_BACKEND_EVENT_ERROR}) not in await events(client, w.id)

    # explicit values win over the template's
    r2 = await create(client, {"name": "h2", "template": "hermes-tpl", "model": "mine", "runtime": "crewai"})
    await asyncio.wait_for(_until(lambda: len(fake.specs) == 2), 10)
    assert (fake.specs[1].runtime, fake.specs[1].model) == ("crewai", "mine")

    listed = {w["id"]: w for w in (await client.get("/workspaces", headers=AUTH)).json()}
    assert listed[r.json()["id"]]["provision_timeout_ms"] == 900_000
    assert "provision_timeout_ms" not in listed[r2.json()["id"]]
    assert (await client.get(f"/workspaces/{r.json()['id']}")).json()["provision_timeout_ms"] == 900_000


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.01)


async def test_missing_template_dir_is_not_an_error(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    r = await create(client, {"name": "x", "template": "no-such-template", "runtime": "hermes", "model": "m"})
    assert r.status_code == 201
    assert (await row(client, r.json()["id"])).runtime == "hermes"


async def test_invalid_template_rejected_before_insert_even_with_runtime_and_model(
    client_factory: Any,
) -> None:
    client = await admin_client(client_factory)
    for template in ("../outside", "/etc", "a/../../b"):
        for extra in ({}, {"runtime": "hermes", "model": "m"}):
            r = await create(client, {"name": "bad", "template": template, **extra})
            assert (r.status_code, r.json()) == (400, {"error": "invalid template"}), (template, extra)
    async with ctx_of(client).engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(workspaces))).scalar() == 0


VALIDATION_CASES: list[tuple[Any, int, str | None]] = [
    ("{", 400, "invalid workspace payload"),
    ("[]", 400, "invalid workspace payload"),
    ("", 400, "invalid workspace payload"),
    ({}, 400, "invalid workspace payload"),
    ({"tier": 1}, 400, "invalid workspace payload"),
    ({"name": ""}, 400, "invalid workspace payload"),
    ({"name": None}, 400, "invalid workspace payload"),
    ({"name": 5}, 400, "invalid workspace payload"),
    ({"name": "a", "tier": "3"}, 400, "invalid workspace payload"),
    ({"name": "a", "tier": 1.5}, 400, "invalid workspace payload"),
    ({"name": "a", "secrets": {"K": 1}}, 400, "invalid workspace payload"),
    ({"name": "a", "canvas": {"x": "left"}}, 400, "invalid workspace payload"),
    ({"name": "n" * 255}, 201, None),
    ({"name": "n" * 256}, 400, "invalid workspace fields"),
    ({"name": "a", "role": "r" * 1000}, 201, None),
    ({"name": "a", "role": "r" * 1001}, 400, "invalid workspace fields"),
    ({"name": "a", "model": "m" * 100}, 201, None),
    ({"name": "a", "model": "m" * 101}, 400, "invalid workspace fields"),
    ({"name": "a", "runtime": "x" * 100}, 201, None),
    ({"name": "a", "runtime": "x" * 101}, 400, "invalid workspace fields"),
    ({"name": "a\nb"}, 400, "invalid workspace fields"),
    ({"name": "a", "role": "x\ry"}, 400, "invalid workspace fields"),
    ({"name": "a", "model": "x\ny"}, 400, "invalid workspace fields"),
    ({"name": "a", "runtime": "x\ny"}, 400, "invalid workspace fields"),
    *[({"name": f"a{c}b"}, 400, "invalid workspace fields") for c in "{}[]|>*&!"],
    *[({"name": "a", "role": f"a{c}b"}, 400, "invalid workspace fields") for c in "{}[]|>*&!"],
    ({"name": "a", "model": "a*b"}, 201, None),
    ({"name": "a\x00"}, 400, "invalid workspace fields"),
    ({"name": "a", "secrets": {"K": "v\x00"}}, 400, "invalid workspace fields"),
    ({"name": "a", "parent_id": "not-a-uuid"}, 400, "invalid workspace fields"),
    ({"name": "a", "parent_id": "123e4567-e89b-12d3-a456-426614174000"}, 400, "invalid workspace fields"),
    ({"name": "a", "budget_limit": -1}, 400, "invalid workspace fields"),
    ({"name": "a", "workspace_dir": "relative"}, 400, "invalid workspace directory"),
    ({"name": "a", "workspace_dir": "/etc/app"}, 400, "invalid workspace directory"),
    ({"name": "a", "workspace_dir": "/home/../etc"}, 400, "invalid workspace directory"),
    ({"name": "a", "workspace_dir": "//usr/lib"}, 400, "invalid workspace directory"),
    ({"name": "a", "workspace_access": "root"}, 400, "invalid workspace access"),
    ({"name": "a", "workspace_access": "read_only"}, 400, "invalid workspace access"),
    ({"name": "a", "workspace_dir": "/srv/code", "workspace_access": "read_only"}, 201, None),
]


async def test_create_validation_table(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    for body, status, error in VALIDATION_CASES:
        r = await create(client, body)
        assert r.status_code == status, (body, r.text)
        if error is not None:
            assert r.json() == {"error": error}, body


async def test_create_requires_admin(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    r = await client.post("/workspaces", json={"name": "x"})
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    r = await client.post("/workspaces", json={"name": "x"}, headers={"Authorization": "Bearer nope"})
    assert (r.status_code, r.json()) == (401, {"error": "invalid admin auth token"})


async def test_secrets_saved_encrypted_in_the_create_transaction(client_factory: Any) -> None:
    key = os.urandom(32)
    client = await admin_client(client_factory, SECRETS_ENCRYPTION_KEY=base64.b64encode(key).decode())
    r = await create(client, {"name": "s", "secrets": {"B_KEY": "two", "A_KEY": "one"}})
    ws_id = r.json()["id"]
    s = workspace_secrets
    async with ctx_of(client).engine.connect() as conn:
        rows = (await conn.execute(sa.select(s).where(s.c.workspace_id == ws_id).order_by(s.c.key))).all()
    assert [(x.key, x.encryption_version) for x in rows] == [("A_KEY", 1), ("B_KEY", 1)]
    crypto = SecretsCrypto(key)
    assert [crypto.decrypt(x.encrypted_value, 1) for x in rows] == [b"one", b"two"]
    assert all(b"one" not in x.encrypted_value and b"two" not in x.encrypted_value for x in rows)

    empty = await create(client, {"name": "e", "secrets": {}})
    async with ctx_of(client).engine.connect() as conn:
        n = await conn.execute(
            sa.select(sa.func.count()).select_from(s).where(s.c.workspace_id == empty.json()["id"])
        )
        assert n.scalar() == 0


async def test_secrets_without_key_are_encrypted_under_the_generated_key(client_factory: Any) -> None:
    # before issue 11 these were plaintext (version 0); now the generated key file encrypts them
    client = await admin_client(client_factory)
    ws_id = (await create(client, {"name": "s", "secrets": {"K": "v"}})).json()["id"]
    s = workspace_secrets
    async with ctx_of(client).engine.connect() as conn:
        x = (await conn.execute(sa.select(s).where(s.c.workspace_id == ws_id))).one()
    assert (x.key, x.encryption_version) == ("K", 1) and bytes(x.encrypted_value) != b"v"
    r = await client.get(f"/workspaces/{ws_id}/secrets/values", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"K": "v"})


async def test_secret_save_failure_rolls_back_the_workspace(
    client_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await admin_client(client_factory)

    async def broken(*_a: Any, **_k: Any) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(store, "upsert_secret", broken)
    r = await create(client, {"name": "s", "secrets": {"API_KEY": "v"}})
    assert (r.status_code, r.json()) == (500, {"error": "failed to save secret: API_KEY"})
    async with ctx_of(client).engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(workspaces))).scalar() == 0


async def test_external_with_url_goes_online(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    r = await create(client, {"name": "ext", "external": True, "url": "https://agent.example.com/a2a"})
    assert r.status_code == 201
    body = r.json()
    ws_id = body["id"]
    # ADMIN_TOKEN set: the token is minted at create and shown once, as without a url (issue 11 §1)
    conn_block = body.pop("connection")
    assert body == {"external": True, "id": ws_id, "status": "online"}
    assert len(conn_block["auth_token"]) == 43 and conn_block["workspace_id"] == ws_id
    w = await row(client, ws_id)
    assert (w.status, w.runtime, w.url) == ("online", "external", "https://agent.example.com/a2a")
    assert await ctx_of(client).kv.get(url_key(ws_id)) == "https://agent.example.com/a2a"
    assert await events(client, ws_id) == [
        ("WORKSPACE_PROVISIONING", {"name": "ext", "tier": 3, "runtime": "langgraph"}),
        ("WORKSPACE_ONLINE", {"name": "ext", "external": True}),
    ]
    # the open bootstrap mode keeps the reference's body (the first register mints the token)
    open_client = await client_factory()  # same database: a workspace token is its admin credential (ADR-001)
    r = await create(
        open_client,
        {"name": "ext", "external": True, "url": "https://agent.example.com/a2a"},
        headers={"Authorization": f"Bearer {conn_block['auth_token']}"},
    )
    ws_id = r.json()["id"]
    assert r.text == json.dumps({"external": True, "id": ws_id, "status": "online"}, separators=(",", ":"))


async def test_external_without_url_awaits_agent_with_one_time_token(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    r = await create(
        client,
        {"name": "ext", "runtime": "external"},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ws.example.com"},
    )
    assert r.status_code == 201
    body = r.json()
    ws_id = body["id"]
    conn_block = body.pop("connection")
    assert body == {"external": True, "id": ws_id, "status": "awaiting_agent"}
    token = conn_block["auth_token"]
    assert len(token) == 43
    assert {k: v for k, v in conn_block.items() if k not in ("curl_register_template", "python_snippet")} == {
        "auth_token": token,
        "heartbeat_endpoint": "https://ws.example.com/registry/heartbeat",
        "platform_url": "https://ws.example.com",
        "registry_endpoint": "https://ws.example.com/registry/register",
        "workspace_id": ws_id,
    }
    assert ws_id in conn_block["curl_register_template"] and ws_id in conn_block["python_snippet"]
    w = await row(client, ws_id)
    assert (w.status, w.runtime) == ("awaiting_agent", "external")
    assert [e for e, _ in await events(client, ws_id)] == [
        "WORKSPACE_PROVISIONING",
        "WORKSPACE_AWAITING_AGENT",
    ]
    assert (await events(client, ws_id))[1][1] == {"name": "ext", "external": True}

    # the minted token is a WorkspaceAuth credential for exactly this workspace
    bearer = {"Authorization": f"Bearer {token}"}
    state = await client.get(f"/workspaces/{ws_id}/state", headers=bearer)
    assert (state.status_code, state.json()) == (
        200,
        {"deleted": False, "paused": False, "status": "awaiting_agent", "workspace_id": ws_id},
    )
    other = (await create(client, {"name": "other"})).json()["id"]
    denied = await client.get(f"/workspaces/{other}/config", headers=bearer)
    assert (denied.status_code, denied.json()) == (401, {"error": "invalid workspace auth token"})


async def test_external_platform_url_sources(client_factory: Any) -> None:
    client = await admin_client(client_factory, EXTERNAL_PLATFORM_URL="https://public.example/")
    r = await create(client, {"name": "e", "external": True})
    assert r.json()["connection"]["platform_url"] == "https://public.example"
    plain = await admin_client(client_factory)
    r = await create(plain, {"name": "e", "external": True})
    assert r.json()["connection"]["platform_url"] == "http://testserver"


async def test_get_rejects_non_uuid_ids_and_404s_unknown(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    for bad in ("not-a-uuid", "ws-123", "123", "%3Cscript%3E", "123e4567-e89b-12d3-a456-42661417400"):
        r = await client.get(f"/workspaces/{bad}")
        assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"}), bad
    r = await client.get("/workspaces/00000000-0000-0000-0000-000000000000")
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})


async def test_removed_rows_still_returned_by_get_but_not_listed(client_factory: Any) -> None:
    client = await admin_client(client_factory)
    keep = (await create(client, {"name": "keep"})).json()["id"]
    gone = (await create(client, {"name": "gone"})).json()["id"]
    assert (await client.delete(f"/workspaces/{gone}", headers=AUTH)).status_code == 200
    assert [w["id"] for w in (await client.get("/workspaces", headers=AUTH)).json()] == [keep]
    got = await client.get(f"/workspaces/{gone}")
    assert (got.status_code, got.json()["status"]) == (200, "removed")
