"""`GET /workspaces/:id/audit` (spec 05 §5, §11) on SQLite and Postgres.

Rows are written straight into `audit_events`, as the agents' ledger does, with HMACs computed here by an
independent implementation of the documented formula (the `cryptography` package's PBKDF2 and HMAC, not
the server's hashlib code), so a drift in either side shows up as `chain_valid: false`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tests.integration.registry_support import add_workspace, ctx_of, mint_token
from workspace_server.audit import ledger
from workspace_server.common.ids import new_id
from workspace_server.db.schema import audit_events, workspaces

ADMIN = "admin-secret"
AH = {"Authorization": f"Bearer {ADMIN}"}
SALT = "test-ledger-salt"
T0 = datetime(2026, 4, 17, 9, 0, 0, tzinfo=UTC)
OPERATIONS = ("task_start", "llm_call", "tool_call", "task_end")
EVENT_KEYS = [
    "id",
    "timestamp",
    "agent_id",
    "session_id",
    "operation",
    "input_hash",
    "output_hash",
    "model_used",
    "human_oversight_flag",
    "risk_flag",
    "prev_hmac",
    "hmac",
    "workspace_id",
]
SIGNED = [k for k in EVENT_KEYS if k not in ("hmac", "workspace_id")]


@functools.cache
def ledger_key(salt: str) -> bytes:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=b"molecule-audit-ledger-v1", iterations=210_000
    )
    return kdf.derive(salt.encode())


def sign(key: bytes, ev: dict[str, Any]) -> str:
    fields = {k: ev[k] for k in SIGNED}
    fields["timestamp"] = ev["timestamp"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    return mac.finalize().hex()


def chain(
    ws: str, agent: str, n: int, *, start: datetime = T0, session: str = "sess-1", step: float = 60
) -> list[dict[str, Any]]:
    """`n` signed rows of one agent, each linked to the previous; sub-second timestamps on purpose."""
    key, prev, rows = ledger_key(SALT), None, []
    for i in range(n):
        ev = {
            "id": f"{agent}-{i:04d}",
            "timestamp": start + timedelta(seconds=i * step, microseconds=123456),
            "agent_id": agent,
            "session_id": session,
            "operation": OPERATIONS[i % 4],
            "input_hash": hashlib.sha256(f"in{i}".encode()).hexdigest(),
            "output_hash": None if i % 4 == 0 else hashlib.sha256(f"out{i}".encode()).hexdigest(),
            "model_used": "modèle-é" if i % 2 else None,
            "human_oversight_flag": i % 3 == 0,
            "risk_flag": i == 2,
            "prev_hmac": prev,
            "workspace_id": ws,
        }
        ev["hmac"] = prev = sign(key, ev)
        rows.append(ev)
    return rows


async def insert(client: httpx.AsyncClient, rows: list[dict[str, Any]]) -> None:
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(sa.insert(audit_events), rows)


async def update(client: httpx.AsyncClient, row_id: str, **values: Any) -> None:
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(sa.update(audit_events).where(audit_events.c.id == row_id).values(**values))


async def _ws(client: httpx.AsyncClient, name: str = "ws") -> tuple[str, dict[str, str]]:
    ctx = ctx_of(client)
    ws_id = await add_workspace(ctx, name, status="online")
    return ws_id, {"Authorization": f"Bearer {await mint_token(ctx, ws_id)}"}


async def audit(client: httpx.AsyncClient, ws: str, h: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await client.get(f"/workspaces/{ws}/audit", params=params, headers=h)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [e["id"] for e in body["events"]]


async def test_page_shape_order_and_valid_chain(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    other, _ = await _ws(client, "other")
    alice = chain(ws, "alice", 4)
    bob = chain(ws, "bob", 3, start=T0 + timedelta(seconds=30))  # interleaved with alice
    await insert(client, [*alice, *bob, *chain(other, "alice-elsewhere", 2)])

    r = await client.get(f"/workspaces/{ws}/audit", headers=h)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["chain_valid", "events", "total"]
    assert body["chain_valid"] is True and body["total"] == 7
    assert ids(body) == [
        "alice-0000",
        "bob-0000",
        "alice-0001",
        "bob-0001",
        "alice-0002",
        "bob-0002",
        "alice-0003",
    ]
    first = body["events"][0]
    assert list(first) == EVENT_KEYS
    expected = {**alice[0], "timestamp": "2026-04-17T09:00:00.123456Z"}
    assert first == expected
    assert body["events"][1]["model_used"] is None and body["events"][2]["model_used"] == "modèle-é"
    assert all(len(e["hmac"]) == 64 for e in body["events"])


async def test_tampering_and_broken_links_are_detected(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    rows = chain(ws, "alice", 5)
    await insert(client, rows)
    assert (await audit(client, ws, h))["chain_valid"] is True

    tampered = [
        {"risk_flag": True},
        {"model_used": "other-model"},
        {"input_hash": None},
        {"session_id": "sess-2"},
        {"timestamp": rows[1]["timestamp"] + timedelta(seconds=1)},
        {"hmac": rows[1]["hmac"].upper()},
    ]
    for change in tampered:
        await update(client, "alice-0001", **change)
        assert (await audit(client, ws, h))["chain_valid"] is False, change
        await update(client, "alice-0001", **{k: rows[1][k] for k in change})
        assert (await audit(client, ws, h))["chain_valid"] is True

    # a sub-second change is not part of the signed text
    await update(client, "alice-0001", timestamp=rows[1]["timestamp"].replace(microsecond=999999))
    assert (await audit(client, ws, h))["chain_valid"] is True

    # a row whose own HMAC is right but whose prev_hmac names the wrong row: a broken link
    key = ledger_key(SALT)
    relinked = {**rows[3], "prev_hmac": rows[1]["hmac"]}
    relinked["hmac"] = sign(key, relinked)
    await update(client, "alice-0003", prev_hmac=relinked["prev_hmac"], hmac=relinked["hmac"])
    assert (await audit(client, ws, h))["chain_valid"] is False
    await update(client, "alice-0003", prev_hmac=rows[3]["prev_hmac"], hmac=rows[3]["hmac"])

    # an agent's first row must not point anywhere
    genesis = {**rows[0], "prev_hmac": "0" * 64}
    genesis["hmac"] = sign(key, genesis)
    await update(client, "alice-0000", prev_hmac=genesis["prev_hmac"], hmac=genesis["hmac"])
    assert (await audit(client, ws, h))["chain_valid"] is False


async def test_chain_valid_is_null_without_salt_or_past_the_first_page(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    await insert(client, chain(ws, "alice", 3))
    body = await audit(client, ws, h, offset=1)
    assert (body["chain_valid"], ids(body), body["total"]) == (None, ["alice-0001", "alice-0002"], 3)
    for offset in ("0", "-3", "abc", ""):  # invalid offsets mean 0: verified
        assert (await audit(client, ws, h, offset=offset))["chain_valid"] is True, offset

    unsalted = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await unsalted.get(f"/workspaces/{ws}/audit", headers=h)
    assert r.status_code == 200 and r.json()["chain_valid"] is None and r.json()["total"] == 3


async def test_empty_page(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    r = await client.get(f"/workspaces/{ws}/audit", headers=h)
    assert (r.status_code, r.text) == (200, '{"chain_valid":true,"events":[],"total":0}')
    unsalted = await client_factory(ADMIN_TOKEN=ADMIN)
    r = await unsalted.get(f"/workspaces/{ws}/audit", headers=h)
    assert r.text == '{"chain_valid":null,"events":[],"total":0}'
    for junk in ("not-a-uuid", new_id()):  # no such workspace: an empty page, no database error
        r = await client.get(f"/workspaces/{junk}/audit", headers=AH)
        assert (r.status_code, r.text) == (200, '{"chain_valid":true,"events":[],"total":0}')
    # a NUL in the URL is refused before routing (issue 11 §3: docs/decisions.md "Input bounds")
    r = await client.get(f"/workspaces/{ws}/audit", params={"agent_id": "a\x00b"}, headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "invalid URL"})


async def test_filters(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    await insert(client, chain(ws, "alice", 4, session="s-a"))  # 09:00, 09:01, 09:02, 09:03 (+.123456)
    await insert(client, chain(ws, "bob", 2, start=T0 + timedelta(seconds=90), session="s-b"))

    body = await audit(client, ws, h, agent_id="alice")
    assert (ids(body), body["total"], body["chain_valid"]) == ([f"alice-000{i}" for i in range(4)], 4, True)
    assert ids(await audit(client, ws, h, session_id="s-b")) == ["bob-0000", "bob-0001"]
    assert ids(await audit(client, ws, h, agent_id="alice", session_id="s-b")) == []

    # from is inclusive, to exclusive; offsets and fractions as RFC 3339 allows
    window = await audit(
        client, ws, h, **{"from": "2026-04-17T09:01:00.123456Z", "to": "2026-04-17T09:03:00Z"}
    )
    assert ids(window) == ["alice-0001", "bob-0000", "alice-0002", "bob-0001"]
    # a window that does not start at an agent's first row reports false (documented upstream behaviour)
    assert window["chain_valid"] is False
    shifted = await audit(client, ws, h, **{"from": "2026-04-17T11:02:00+02:00", "agent_id": "alice"})
    assert ids(shifted) == ["alice-0002", "alice-0003"]
    early = await audit(client, ws, h, to="2026-04-17T09:00:00.123457Z")
    assert (ids(early), early["chain_valid"]) == (["alice-0000"], True)


async def test_limit_default_cap_and_pagination(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    rows = chain(ws, "alice", 505, step=1)
    await insert(client, rows)

    for limit in (None, "0", "-1", "abc", "1.5", "99999999999999999999"):
        params = {} if limit is None else {"limit": limit}
        body = await audit(client, ws, h, **params)
        assert (len(body["events"]), body["total"], body["chain_valid"]) == (100, 505, True), limit
    for limit in ("500", "501", "100000", "+600"):
        assert len((await audit(client, ws, h, limit=limit))["events"]) == 500, limit
    page = await audit(client, ws, h, limit=3, offset=502)
    assert (ids(page), page["total"], page["chain_valid"]) == (
        ["alice-0502", "alice-0503", "alice-0504"],
        505,
        None,
    )
    assert (await audit(client, ws, h, limit=3, offset=600))["events"] == []


async def test_bad_from_and_to_are_400(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    bad = [
        "2026-04-17",
        "2026-04-17 00:00:00Z",
        "2026-04-17T00:00:00",
        "2026-04-17T00:00:00+0200",
        "2026-04-17T00:00:00z",
        "2026-04-17t00:00:00Z",
        "2026-04-17T00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-04-17T24:00:00Z",
        "2026-04-17T00:00:60Z",
        "2026-04-17T00:00:00+24:00",
        "2026-04-17T00:00:00.Z",
        "1776384000",
        "yesterday",
    ]
    for value in bad:
        r = await client.get(f"/workspaces/{ws}/audit", params={"from": value}, headers=h)
        assert (r.status_code, r.json()) == (
            400,
            {"error": "from must be RFC 3339 (e.g. 2026-04-17T00:00:00Z)"},
        ), value
        r = await client.get(f"/workspaces/{ws}/audit", params={"to": value}, headers=h)
        assert (r.status_code, r.json()) == (
            400,
            {"error": "to must be RFC 3339 (e.g. 2026-04-17T23:59:59Z)"},
        ), value
    for good in ("2026-04-17T00:00:00Z", "2026-04-17T00:00:00.5Z", "2026-04-17T02:00:00-07:30"):
        r = await client.get(f"/workspaces/{ws}/audit", params={"from": good, "to": good}, headers=h)
        assert r.status_code == 200, good


async def test_auth_and_workspace_isolation(client_factory: Any) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN, AUDIT_LEDGER_SALT=SALT)
    ws, h = await _ws(client)
    other, oh = await _ws(client, "other")
    await insert(client, chain(ws, "alice", 2))
    url = f"/workspaces/{ws}/audit"
    r = await client.get(url)
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    for bad in ({"Authorization": "Bearer nope"}, oh):
        r = await client.get(url, headers=bad)
        assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    assert (await audit(client, ws, AH))["total"] == 2
    assert (await audit(client, ws, h))["total"] == 2
    assert (await audit(client, other, oh))["total"] == 0

    # the rows go with their workspace (ON DELETE CASCADE)
    async with ctx_of(client).engine.begin() as conn:
        await conn.execute(sa.delete(workspaces).where(workspaces.c.id == ws))
        left = (await conn.execute(sa.select(sa.func.count()).select_from(audit_events))).scalar()
    assert left == 0


def test_row_hmac_is_64_hex_and_ignores_sub_seconds() -> None:
    [row] = chain(new_id(), "alice", 1)
    key = ledger.derive_key(SALT)
    assert key == ledger_key(SALT)

    class Row:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    mac = ledger.row_hmac(key, Row(**row))
    assert mac == row["hmac"]
    assert len(mac) == 64 and all(ch in "0123456789abcdef" for ch in mac)
    whole = Row(**{**row, "timestamp": row["timestamp"].replace(microsecond=0)})
    assert ledger.row_hmac(key, whole) == mac
    later = Row(**{**row, "timestamp": row["timestamp"] + timedelta(seconds=1)})
    assert ledger.row_hmac(key, later) != mac
