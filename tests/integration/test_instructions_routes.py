"""Platform instructions (spec 04 §6): admin CRUD and the per-workspace resolve text."""

from __future__ import annotations

from typing import Any

import httpx

from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
AH = {"Authorization": f"Bearer {ADMIN}"}
KEYS = ["id", "scope", "scope_target", "title", "content", "priority", "enabled", "created_at", "updated_at"]


async def _ws(ctx: Any) -> tuple[str, dict[str, str]]:
    ws_id = new_id()
    async with ctx.engine.begin() as conn:
        await insert_workspace(conn, id=ws_id, name="ws", status="online")
        token = await issue_workspace_token(conn, ws_id)
    return ws_id, {"Authorization": f"Bearer {token}"}


async def _create(client: httpx.AsyncClient, **body: Any) -> str:
    r = await client.post("/instructions", json=body, headers=AH)
    assert r.status_code == 201, r.text
    assert list(r.json()) == ["id"]
    return str(r.json()["id"])


async def test_create_validation(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    required = "scope, title, and content are required"
    cases = [
        ({"scope": "global", "title": "t"}, required),
        ({"scope": "global", "content": "c"}, required),
        ({"title": "t", "content": "c"}, required),
        ({"scope": "global", "title": "t", "content": "c", "priority": "high"}, required),
        ({"scope": "global", "title": "t", "content": "c", "priority": 1.5}, required),
        (
            {"scope": "team", "title": "t", "content": "c"},
            "scope must be global or workspace (team scope not yet supported)",
        ),
        ({"scope": "workspace", "title": "t", "content": "c"}, "scope_target required for workspace scope"),
        (
            {"scope": "workspace", "title": "t", "content": "c", "scope_target": ""},
            "scope_target required for workspace scope",
        ),
        ({"scope": "global", "title": "t", "content": "c" * 8193}, "content exceeds 8192 chars"),
        ({"scope": "global", "title": "é" * 101, "content": "c"}, "title exceeds 200 chars"),
    ]
    for body, message in cases:
        r = await client.post("/instructions", json=body, headers=AH)
        assert (r.status_code, r.json()) == (400, {"error": message}), body
    r = await client.post("/instructions", content=b"nope", headers=AH)
    assert (r.status_code, r.json()) == (400, {"error": required})
    await _create(client, scope="global", title="t" * 200, content="c" * 8192)


async def test_crud_and_listing(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = new_id()
    low = await _create(client, scope="global", title="low", content="a", priority=1)
    high = await _create(client, scope="global", title="high", content="b", priority=5)
    mine = await _create(client, scope="workspace", scope_target=ws.upper(), title="mine", content="c")
    await _create(client, scope="workspace", scope_target=new_id(), title="theirs", content="d")

    r = await client.get("/instructions", headers=AH)
    assert r.status_code == 200
    items = r.json()
    assert [i["title"] for i in items] == ["high", "low", "mine", "theirs"]
    assert all(list(i) == KEYS for i in items)
    first = items[0]
    assert (first["scope"], first["scope_target"], first["priority"], first["enabled"]) == (
        "global",
        None,
        5,
        True,
    )
    assert items[2]["scope_target"] == ws  # stored in the canonical lowercase form

    r = await client.get("/instructions", params={"scope": "workspace"}, headers=AH)
    assert [i["title"] for i in r.json()] == ["mine", "theirs"]
    r = await client.get("/instructions", params={"workspace_id": ws}, headers=AH)
    assert [i["title"] for i in r.json()] == ["high", "low", "mine"]

    r = await client.put(
        f"/instructions/{low}", json={"enabled": False, "title": "low!", "priority": None}, headers=AH
    )
    assert (r.status_code, r.json()) == (200, {"status": "updated"})
    r = await client.get("/instructions", params={"workspace_id": ws}, headers=AH)
    assert [i["title"] for i in r.json()] == ["high", "mine"]
    r = await client.get("/instructions", params={"scope": "global"}, headers=AH)
    assert [(i["title"], i["enabled"], i["priority"]) for i in r.json()] == [
        ("high", True, 5),
        ("low!", False, 1),
    ]

    for body in ({"priority": "x"}, {"enabled": "yes"}):
        r = await client.put(f"/instructions/{low}", json=body, headers=AH)
        assert (r.status_code, r.json()) == (400, {"error": "invalid request"})
    r = await client.put(f"/instructions/{high}", json={"content": "c" * 8193}, headers=AH)
    assert (r.status_code, r.json()) == (400, {"error": "content exceeds 8192 chars"})
    for missing in (new_id(), "not-a-uuid"):
        r = await client.put(f"/instructions/{missing}", json={"title": "x"}, headers=AH)
        assert (r.status_code, r.json()) == (404, {"error": "instruction not found"})
        r = await client.delete(f"/instructions/{missing}", headers=AH)
        assert (r.status_code, r.json()) == (404, {"error": "instruction not found"})

    r = await client.delete(f"/instructions/{mine}", headers=AH)
    assert (r.status_code, r.json()) == (200, {"status": "deleted"})
    r = await client.get("/instructions", params={"scope": "workspace"}, headers=AH)
    assert [i["title"] for i in r.json()] == ["theirs"]


async def test_resolve_text(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client.app.state.ctx)

    r = await client.get(f"/workspaces/{ws}/instructions/resolve", headers=h)
    assert (r.status_code, r.json()) == (200, {"instructions": "", "workspace_id": ws})

    await _create(client, scope="global", title="Be kind", content="Always.", priority=1)
    await _create(client, scope="global", title="Be brief", content="Short replies.", priority=9)
    await _create(client, scope="workspace", scope_target=ws, title="Own repo", content="Only touch repo X.")
    off = await _create(client, scope="global", title="Disabled", content="never shown")
    await client.put(f"/instructions/{off}", json={"enabled": False}, headers=AH)
    await _create(client, scope="workspace", scope_target=new_id(), title="Other", content="not mine")

    r = await client.get(f"/workspaces/{ws}/instructions/resolve", headers=h)
    assert r.status_code == 200
    assert r.content == (
        b'{"instructions":"\\n## Platform-Wide Rules\\n\\n### Be brief\\nShort replies.\\n\\n'
        b"### Be kind\\nAlways.\\n\\n\\n## Role-Specific Rules\\n\\n### Own repo\\nOnly touch repo X.\\n\\n"
        b'","workspace_id":"' + ws.encode() + b'"}'
    )


async def test_auth(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws, h = await _ws(client.app.state.ctx)
    other, _ = await _ws(client.app.state.ctx)
    r = await client.get("/instructions")
    assert (r.status_code, r.json()) == (401, {"error": "admin auth required"})
    r = await client.post("/instructions", json={"scope": "global", "title": "t", "content": "c"}, headers=h)
    assert r.status_code == 401
    r = await client.get(f"/workspaces/{other}/instructions/resolve", headers=h)
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    r = await client.get(f"/workspaces/{ws}/instructions/resolve", headers=AH)
    assert r.status_code == 200


def test_merge_leading_system_messages() -> None:
    from workspace_server.instructions.hermes import merge_leading_system_messages as merge

    user = {"role": "user", "content": "hi"}
    late = {"role": "system", "content": "late"}
    assert merge([]) == []
    assert merge([user]) == [user]
    assert merge([{"role": "system", "content": "a"}, user]) == [{"role": "system", "content": "a"}, user]
    merged = merge(
        [
            {"role": "system", "content": "rules"},
            {"role": "system", "content": ["not", "text"]},
            {"role": "system", "content": "memory"},
            user,
            late,
        ]
    )
    assert merged == [{"role": "system", "content": "rules\n\n\n\nmemory"}, user, late]
