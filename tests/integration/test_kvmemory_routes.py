"""KV memory `/workspaces/:id/memory[/:key]` (spec 05 §3) on SQLite and Postgres: what a client sees."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from tests.integration.registry_support import add_workspace, bearer, ctx_of, mint_token
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import workspace_memory

ADMIN = "kv-admin"
AH = bearer(ADMIN)
ENTRY_KEYS = ["key", "value", "version", "updated_at"]


async def _setup(client_factory: Any) -> tuple[httpx.AsyncClient, str, dict[str, str]]:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ws = await add_workspace(ctx_of(client), "kv", status="online")
    return client, ws, bearer(await mint_token(ctx_of(client), ws))


async def _set(client: httpx.AsyncClient, ws: str, h: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(f"/workspaces/{ws}/memory", json=body, headers=h)


async def _rows(client: httpx.AsyncClient, ws: str) -> dict[str, Any]:
    m = workspace_memory
    async with ctx_of(client).engine.connect() as conn:
        rows = (await conn.execute(sa.select(m).where(m.c.workspace_id == ws))).all()
    return {r.key: r for r in rows}


async def _expire(client: httpx.AsyncClient, ws: str, key: str) -> None:
    """Move a row's expiry into the past (no sleeping)."""
    m = workspace_memory
    past = utcnow() - timedelta(seconds=5)
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(sa.update(m).where(m.c.workspace_id == ws, m.c.key == key).values(expires_at=past))


def _ts(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


async def test_set_get_list_delete(client_factory: Any) -> None:
    client, ws, h = await _setup(client_factory)
    before = utcnow()
    r = await _set(client, ws, h, key="plan", value={"step": 1, "done": ["a"]})
    assert (r.status_code, r.text) == (200, '{"key":"plan","status":"ok","version":1}')
    r = await _set(client, ws, h, key="plan", value={"step": 2})
    assert (r.status_code, r.text) == (200, '{"key":"plan","status":"ok","version":2}')

    r = await client.get(f"/workspaces/{ws}/memory/plan", headers=h)
    assert r.status_code == 200
    got = r.json()
    assert list(got) == ENTRY_KEYS  # no expires_at without a TTL
    assert (got["key"], got["value"], got["version"]) == ("plan", {"step": 2}, 2)
    assert before - timedelta(seconds=1) <= _ts(got["updated_at"]) <= utcnow() + timedelta(seconds=1)

    values: list[Any] = [None, "text", [1, 2.5, True], 0, False, {"nested": {"deep": [None]}}]
    for i, value in enumerate(values):
        r = await _set(client, ws, h, key=f"k{i}", value=value)
        assert r.status_code == 200, r.text
    r = await client.get(f"/workspaces/{ws}/memory", headers=h)
    assert r.status_code == 200
    listed = r.json()
    assert [e["key"] for e in listed] == [f"k{i}" for i in range(len(values))] + ["plan"]
    assert [e["value"] for e in listed[:-1]] == values
    assert all(list(e) == ENTRY_KEYS and e["version"] == 1 for e in listed[:-1])
    rows = await _rows(client, ws)
    assert rows["plan"].version == 2 and rows["plan"].value == {"step": 2}
    assert rows["k0"].value is None  # JSON null is a value, stored as such

    r = await client.delete(f"/workspaces/{ws}/memory/plan", headers=h)
    assert (r.status_code, r.text) == (200, '{"status":"deleted"}')
    r = await client.get(f"/workspaces/{ws}/memory/plan", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "key not found"})
    r = await client.delete(f"/workspaces/{ws}/memory/plan", headers=h)  # idempotent
    assert (r.status_code, r.json()) == (200, {"status": "deleted"})
    assert "plan" not in await _rows(client, ws)

    # a new write after a delete starts again at version 1
    r = await _set(client, ws, h, key="plan", value=1)
    assert r.json()["version"] == 1


async def test_ttl_and_expiry(client_factory: Any) -> None:
    client, ws, h = await _setup(client_factory)
    before = utcnow()
    r = await _set(client, ws, h, key="lease", value="me", ttl_seconds=3600)
    assert r.status_code == 200
    got = (await client.get(f"/workspaces/{ws}/memory/lease", headers=h)).json()
    assert list(got) == ["key", "value", "version", "expires_at", "updated_at"]
    expires = _ts(got["expires_at"])
    assert before + timedelta(seconds=3599) <= expires <= utcnow() + timedelta(seconds=3601)

    await _set(client, ws, h, key="keep", value=1)
    await _expire(client, ws, "lease")
    r = await client.get(f"/workspaces/{ws}/memory/lease", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "key not found"})
    listed = (await client.get(f"/workspaces/{ws}/memory", headers=h)).json()
    assert [e["key"] for e in listed] == ["keep"]
    assert "lease" in await _rows(client, ws)  # invisible, not gone

    # a write without a TTL revives the key and clears the expiry; the version continues
    r = await _set(client, ws, h, key="lease", value="again")
    assert r.json() == {"key": "lease", "status": "ok", "version": 2}
    got = (await client.get(f"/workspaces/{ws}/memory/lease", headers=h)).json()
    assert "expires_at" not in got and got["value"] == "again"
    assert (await _rows(client, ws))["lease"].expires_at is None

    # ttl 0 expires at once; an explicit null TTL is no TTL
    await _set(client, ws, h, key="flash", value=1, ttl_seconds=0)
    r = await client.get(f"/workspaces/{ws}/memory/flash", headers=h)
    assert r.status_code == 404
    await _set(client, ws, h, key="flash", value=2, ttl_seconds=None)
    got = (await client.get(f"/workspaces/{ws}/memory/flash", headers=h)).json()
    assert (got["value"], got["version"], "expires_at" in got) == (2, 2, False)


async def test_version_guard(client_factory: Any) -> None:
    client, ws, h = await _setup(client_factory)
    # 0 on an absent key creates version 1 (spec 05 §11)
    r = await _set(client, ws, h, key="ledger", value=["a"], if_match_version=0)
    assert (r.status_code, r.text) == (200, '{"key":"ledger","status":"ok","version":1}')
    r = await _set(client, ws, h, key="ledger", value=["x"], if_match_version=0)
    assert (r.status_code, r.text) == (
        409,
        '{"current_version":1,"error":"if_match_version mismatch","expected_version":0}',
    )
    r = await _set(client, ws, h, key="ledger", value=["a", "b"], if_match_version=1)
    assert (r.status_code, r.json()) == (200, {"key": "ledger", "status": "ok", "version": 2})
    r = await _set(client, ws, h, key="ledger", value=["stale"], if_match_version=1)
    assert (r.status_code, r.text) == (
        409,
        '{"current_version":2,"error":"if_match_version mismatch","expected_version":1}',
    )
    got = (await client.get(f"/workspaces/{ws}/memory/ledger", headers=h)).json()
    assert (got["value"], got["version"]) == (["a", "b"], 2)  # the refused writes changed nothing

    r = await _set(client, ws, h, key="ghost", value=1, if_match_version=5)
    assert (r.status_code, r.text) == (
        409,
        '{"current_version":null,"error":"if_match_version mismatch: key does not exist",'
        '"expected_version":5}',
    )
    r = await _set(client, ws, h, key="ghost", value=1, if_match_version=-1)
    assert r.status_code == 409 and r.json()["expected_version"] == -1
    assert "ghost" not in await _rows(client, ws)

    # an expired row is invisible to reads but still holds its version for the guard
    await _set(client, ws, h, key="lease", value="old", ttl_seconds=60)
    await _expire(client, ws, "lease")
    assert (await client.get(f"/workspaces/{ws}/memory/lease", headers=h)).status_code == 404
    r = await _set(client, ws, h, key="lease", value="new", if_match_version=0)
    assert (r.status_code, r.json()["current_version"]) == (409, 1)
    r = await _set(client, ws, h, key="lease", value="new", if_match_version=1, ttl_seconds=60)
    assert (r.status_code, r.json()["version"]) == (200, 2)
    got = (await client.get(f"/workspaces/{ws}/memory/lease", headers=h)).json()
    assert (got["value"], got["version"], "expires_at" in got) == ("new", 2, True)

    # an explicit null guard is no guard (Go's *int64)
    r = await _set(client, ws, h, key="ledger", value="forced", if_match_version=None)
    assert r.json()["version"] == 3


async def test_concurrent_writers_never_both_win(client_factory: Any) -> None:
    client, ws, h = await _setup(client_factory)
    n = 8

    async def many(**body: Any) -> list[httpx.Response]:
        return list(await asyncio.gather(*(_set(client, ws, h, **body) for _ in range(n))))

    created = await many(key="new", value="v", if_match_version=0)
    assert sorted(r.status_code for r in created) == [200] + [409] * (n - 1)
    assert {r.json()["current_version"] for r in created if r.status_code == 409} == {1}

    updated = await many(key="new", value="w", if_match_version=1)
    assert sorted(r.status_code for r in updated) == [200] + [409] * (n - 1)
    assert {r.json()["current_version"] for r in updated if r.status_code == 409} == {2}

    # unguarded writers each get their own version: no increment is lost
    upserts = await many(key="counter", value=0)
    assert sorted(r.json()["version"] for r in upserts) == list(range(1, n + 1))
    assert (await _rows(client, ws))["counter"].version == n


async def test_bad_input_is_400(client_factory: Any) -> None:
    client, ws, h = await _setup(client_factory)
    url = f"/workspaces/{ws}/memory"
    ttl_msg = "ttl_seconds must be a non-negative integer"
    version_msg = "if_match_version must be an integer"
    cases: list[tuple[Any, str]] = [
        ([1, 2], "invalid request body"),
        ("key", "invalid request body"),
        ({}, "key is required"),
        ({"key": "", "value": 1}, "key is required"),
        ({"key": None, "value": 1}, "key is required"),
        ({"key": 5, "value": 1}, "key must be a string"),
        ({"key": ["k"], "value": 1}, "key must be a string"),
        ({"key": "k" * 1025, "value": 1}, "key must be at most 1024 bytes"),
        ({"key": "é" * 513, "value": 1}, "key must be at most 1024 bytes"),
        ({"key": "k"}, "value is required"),
        ({"key": "k", "value": 1, "ttl_seconds": "60"}, ttl_msg),
        ({"key": "k", "value": 1, "ttl_seconds": -1}, ttl_msg),
        ({"key": "k", "value": 1, "ttl_seconds": 1.5}, ttl_msg),
        ({"key": "k", "value": 1, "ttl_seconds": 60.0}, ttl_msg),
        ({"key": "k", "value": 1, "ttl_seconds": True}, ttl_msg),
        ({"key": "k", "value": 1, "ttl_seconds": 10**30}, ttl_msg),
        ({"key": "k", "value": 1, "ttl_seconds": 2**62}, "ttl_seconds is too large"),
        ({"key": "k", "value": 1, "if_match_version": "1"}, version_msg),
        ({"key": "k", "value": 1, "if_match_version": 1.0}, version_msg),
        ({"key": "k", "value": 1, "if_match_version": False}, version_msg),
        ({"key": "k", "value": 1, "if_match_version": 2**63}, version_msg),
        ({"key": "k", "value": 1, "if_match_version": {}}, version_msg),
    ]
    for body, message in cases:
        r = await client.post(url, json=body, headers=h)
        assert (r.status_code, r.json()) == (400, {"error": message}), body
    raw_cases = [
        b"{",
        b"",
        b'{"key":"k","value":1e400}',
        b'{"key":"k","value":NaN}',
        b'{"key":"k","value":{"x":[Infinity]}}',
        b'{"key":"k","value":"\\ud800"}',
        b'{"key":"\\udfff","value":1}',
        b'{"key":"k","value":"a\\u0000b"}',
        b'{"key":"a\\u0000","value":1}',
        b'{"key":"k","value":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ]
    for raw in raw_cases:
        r = await client.post(url, content=raw, headers={**h, "Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (400, {"error": "invalid request body"}), raw[:40]
    assert await _rows(client, ws) == {}  # nothing was written

    # values the databases can store are accepted exactly
    r = await _set(client, ws, h, key="k" * 1024, value={"big": 10**30, "emoji": "💾", "neg": -0.5})
    assert r.status_code == 200, r.text
    got = (await client.get(f"/workspaces/{ws}/memory/{'k' * 1024}", headers=h)).json()
    assert got["value"] == {"big": 10**30, "emoji": "💾", "neg": -0.5}


async def test_unknown_and_malformed_ids(client_factory: Any) -> None:
    client, ws, _ = await _setup(client_factory)
    for bad in (new_id(), "not-a-uuid"):
        r = await _set(client, bad, AH, key="k", value=1)
        assert (r.status_code, r.json()) == (404, {"error": "workspace not found"}), bad
        r = await _set(client, bad, AH, key="k", value=1, if_match_version=0)
        assert (r.status_code, r.json()) == (404, {"error": "workspace not found"}), bad
        r = await client.get(f"/workspaces/{bad}/memory", headers=AH)
        assert (r.status_code, r.json()) == (200, [])
        r = await client.get(f"/workspaces/{bad}/memory/k", headers=AH)
        assert (r.status_code, r.json()) == (404, {"error": "key not found"})
        r = await client.delete(f"/workspaces/{bad}/memory/k", headers=AH)
        assert (r.status_code, r.json()) == (200, {"status": "deleted"})
    # a NUL in the URL is refused before routing, on every route (issue 11 §3, middleware.UrlGuardMiddleware)
    r = await client.get(f"/workspaces/{ws}/memory/a%00b", headers=AH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid URL"})
    r = await client.delete(f"/workspaces/{ws}/memory/a%00b", headers=AH)
    assert (r.status_code, r.json()) == (400, {"error": "invalid URL"})
    # an upper-case id names the same workspace
    r = await _set(client, ws.upper(), AH, key="k", value="upper")
    assert r.status_code == 200
    assert (await client.get(f"/workspaces/{ws}/memory/k", headers=AH)).json()["value"] == "upper"


async def test_auth_and_isolation(client_factory: Any) -> None:
    client, ws, h = await _setup(client_factory)
    other = await add_workspace(ctx_of(client), "other", status="online")
    other_h = bearer(await mint_token(ctx_of(client), other))
    await _set(client, ws, h, key="secret-plan", value="mine")

    requests = [
        ("GET", f"/workspaces/{ws}/memory", None),
        ("POST", f"/workspaces/{ws}/memory", {"key": "x", "value": 1}),
        ("GET", f"/workspaces/{ws}/memory/secret-plan", None),
        ("DELETE", f"/workspaces/{ws}/memory/secret-plan", None),
    ]
    for method, path, body in requests:
        r = await client.request(method, path, json=body)
        assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"}), path
        r = await client.request(method, path, json=body, headers=other_h)
        assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"}), path
    assert set(await _rows(client, ws)) == {"secret-plan"}

    # the other workspace's own store is separate
    assert (await client.get(f"/workspaces/{other}/memory", headers=other_h)).json() == []
    r = await client.get(f"/workspaces/{other}/memory/secret-plan", headers=other_h)
    assert r.status_code == 404
    await _set(client, other, other_h, key="secret-plan", value="theirs")
    assert (await client.get(f"/workspaces/{ws}/memory/secret-plan", headers=h)).json()["value"] == "mine"
    # the admin token reaches every workspace
    r = await client.get(f"/workspaces/{other}/memory/secret-plan", headers=AH)
    assert json.loads(r.text)["value"] == "theirs"


async def test_rows_go_with_the_workspace(client_factory: Any) -> None:
    client, ws, h = await _setup(client_factory)
    await _set(client, ws, h, key="k", value=1)
    r = await client.delete(f"/workspaces/{ws}?confirm=true&purge=true", headers=AH)
    assert r.status_code == 200, r.text
    assert await _rows(client, ws) == {}
