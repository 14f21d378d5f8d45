"""Schedules API (spec 05 §6): CRUD, validation, run-now, the peer and admin health views, auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from croniter import croniter

from tests.conftest import ClientFactory
from tests.integration.registry_support import add_workspace, bearer, build_tree, ctx_of, mint_token
from workspace_server.common.ids import new_id
from workspace_server.context import AppContext
from workspace_server.db.schema import workspace_schedules

ADMIN = "admin-secret"
AH = bearer(ADMIN)
KEYS = [
    "id",
    "workspace_id",
    "name",
    "cron_expr",
    "timezone",
    "prompt",
    "enabled",
    "last_run_at",
    "next_run_at",
    "run_count",
    "last_status",
    "last_error",
    "source",
    "created_at",
    "updated_at",
]
HEALTH_KEYS = [
    "id",
    "name",
    "enabled",
    "last_run_at",
    "next_run_at",
    "run_count",
    "last_status",
    "last_error",
]


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def setup(client_factory: ClientFactory) -> tuple[httpx.AsyncClient, AppContext, str, dict[str, str]]:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(client)
    ws = await add_workspace(ctx, "Cron Agent", status="online")
    return client, ctx, ws, bearer(await mint_token(ctx, ws))


async def create(client: httpx.AsyncClient, ws: str, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(f"/workspaces/{ws}/schedules", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def schedule_row(ctx: AppContext, schedule_id: str) -> Any:
    async with ctx.engine.connect() as conn:
        q = sa.select(workspace_schedules).where(workspace_schedules.c.id == schedule_id)
        return (await conn.execute(q)).first()


async def set_schedule(ctx: AppContext, schedule_id: str, **values: Any) -> None:
    async with ctx.engine.begin() as conn:
        s = workspace_schedules
        await conn.execute(sa.update(s).where(s.c.id == schedule_id).values(**values))


async def test_create_list_and_next_run(client_factory: ClientFactory) -> None:
    client, _, ws, h = await setup(client_factory)
    before = datetime.now(UTC)
    body = await create(
        client,
        ws,
        h,
        name="daily",
        cron_expr="0 9 * * MON-FRI",
        prompt="stand-up\r\nplease",
        timezone="Asia/Tokyo",
    )
    assert list(body) == ["id", "status", "next_run_at"] and body["status"] == "created"
    tokyo = croniter("0 9 * * MON-FRI", before.astimezone(ZoneInfo("Asia/Tokyo")))
    expected = tokyo.get_next(datetime).astimezone(UTC)
    assert parse_ts(body["next_run_at"]) == expected
    assert body["next_run_at"].endswith("Z")

    second = await create(client, ws, h, cron_expr="*/5 * * * *", prompt="poll")
    r = await client.get(f"/workspaces/{ws}/schedules", headers=h)
    assert r.status_code == 200
    items = r.json()
    assert [i["id"] for i in items] == [body["id"], second["id"]]  # by created_at
    assert all(list(i) == KEYS for i in items)
    first = items[0]
    assert (first["name"], first["timezone"], first["prompt"], first["enabled"]) == (
        "daily",
        "Asia/Tokyo",
        "stand-up\nplease",  # \r stripped (#958)
        True,
    )
    assert (first["run_count"], first["last_status"], first["last_error"], first["source"]) == (
        0,
        "",
        "",
        "runtime",
    )
    assert first["last_run_at"] is None and first["workspace_id"] == ws
    assert items[1]["timezone"] == "UTC" and items[1]["name"] == ""
    assert parse_ts(items[1]["next_run_at"]) - before <= timedelta(minutes=5)


async def test_create_refuses_bad_input(client_factory: ClientFactory) -> None:
    client, _, ws, h = await setup(client_factory)
    url = f"/workspaces/{ws}/schedules"
    required = {"error": "cron_expr and prompt are required"}
    cases: list[tuple[Any, int, dict[str, str]]] = [
        ({"prompt": "p"}, 400, required),
        ({"cron_expr": "* * * * *"}, 400, required),
        ({"cron_expr": "", "prompt": "p"}, 400, required),
        ({"cron_expr": 5, "prompt": "p"}, 400, required),
        ({"cron_expr": "* * * * *", "prompt": "p", "enabled": "yes"}, 400, required),
        ([1, 2], 400, required),
        (
            {"cron_expr": "* * * * *", "prompt": "p", "timezone": "Mars/Base"},
            400,
            {"error": "invalid timezone: Mars/Base"},
        ),
        (
            {"cron_expr": "* * * * *", "prompt": "p", "timezone": "../../etc/passwd"},
            400,
            {"error": "invalid timezone: ../../etc/passwd"},
        ),
    ]
    for expr in (
        "@hourly",
        "* * * * * *",
        "0 9 * * 7",
        "0 0 L * *",
        "*/0 * * * *",
        "61 * * * *",
        "5-1 * * * *",
    ):
        cases.append(({"cron_expr": expr, "prompt": "p"}, 400, {"error": "invalid request body"}))
    for body, status, err in cases:
        r = await client.post(url, json=body, headers=h)
        assert (r.status_code, r.json()) == (status, err), body
    r = await client.post(url, content=b"{nope", headers=h)
    assert (r.status_code, r.json()) == (400, required)
    for raw in (
        b'{"cron_expr":"* * * * *","prompt":"p\\u0000"}',
        b'{"cron_expr":"* * * * *","prompt":"\\ud800"}',
    ):
        r = await client.post(url, content=raw, headers=h)  # Postgres text holds neither
        assert (r.status_code, r.json()) == (400, required), raw
    r = await client.get(url, headers=h)
    assert r.json() == []


async def test_names_are_unique_per_workspace(client_factory: ClientFactory) -> None:
    client, ctx, ws, h = await setup(client_factory)
    await create(client, ws, h, cron_expr="* * * * *", prompt="a")
    conflict = {"error": "a schedule with this name already exists in this workspace"}
    r = await client.post(
        f"/workspaces/{ws}/schedules", json={"cron_expr": "* * * * *", "prompt": "b"}, headers=h
    )
    assert (r.status_code, r.json()) == (409, conflict)  # two unnamed schedules: the reference's 500
    named = await create(client, ws, h, name="n", cron_expr="* * * * *", prompt="c")
    r = await client.patch(f"/workspaces/{ws}/schedules/{named['id']}", json={"name": ""}, headers=h)
    assert (r.status_code, r.json()) == (409, conflict)
    other = await add_workspace(ctx, "Other", status="online")
    await create(client, other, AH, name="n", cron_expr="* * * * *", prompt="same name, other workspace")


async def test_unknown_workspace_is_404(client_factory: ClientFactory) -> None:
    client, _, _, _ = await setup(client_factory)
    r = await client.post(
        f"/workspaces/{new_id()}/schedules", json={"cron_expr": "* * * * *", "prompt": "p"}, headers=AH
    )
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})


async def test_patch_rules(client_factory: ClientFactory) -> None:
    client, ctx, ws, h = await setup(client_factory)
    sid = (await create(client, ws, h, name="s", cron_expr="0 0 1 1 *", prompt="yearly"))["id"]
    url = f"/workspaces/{ws}/schedules/{sid}"
    before = await schedule_row(ctx, sid)

    r = await client.patch(url, json={"prompt": "new\r\nprompt", "name": "renamed"}, headers=h)
    assert (r.status_code, r.json()) == (200, {"status": "updated"})
    after = await schedule_row(ctx, sid)
    assert (after.prompt, after.name, after.next_run_at) == ("new\nprompt", "renamed", before.next_run_at)

    r = await client.patch(url, json={"cron_expr": "*/10 * * * *"}, headers=h)
    assert r.status_code == 200
    moved = await schedule_row(ctx, sid)
    assert moved.cron_expr == "*/10 * * * *"
    assert moved.next_run_at - datetime.now(UTC) <= timedelta(minutes=10)

    r = await client.patch(url, json={"timezone": "Nowhere/Land"}, headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "invalid timezone: Nowhere/Land"})
    r = await client.patch(url, json={"cron_expr": "@daily"}, headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})
    r = await client.patch(url, content=b"[", headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "invalid JSON"})
    r = await client.patch(url, json={"enabled": "no"}, headers=h)
    assert (r.status_code, r.json()) == (400, {"error": "invalid JSON"})

    # disabled for a long while, then re-enabled: the next slot is computed from now (the reference kept
    # the stale time, so the schedule fired at once)
    stale = datetime.now(UTC) - timedelta(days=3)
    await set_schedule(ctx, sid, enabled=False, next_run_at=stale)
    enabled_at = datetime.now(UTC)  # the next slot follows the re-enable, which may end just past a slot
    r = await client.patch(url, json={"enabled": True}, headers=h)
    assert r.status_code == 200
    assert (await schedule_row(ctx, sid)).next_run_at > enabled_at

    for bad in ("not-a-uuid", new_id()):
        r = await client.patch(f"/workspaces/{ws}/schedules/{bad}", json={"enabled": False}, headers=h)
        assert (r.status_code, r.json()) == (404, {"error": "schedule not found"})


async def test_another_workspaces_schedule_is_not_found(client_factory: ClientFactory) -> None:
    client, ctx, ws, h = await setup(client_factory)
    other = await add_workspace(ctx, "Other", status="online")
    oh = bearer(await mint_token(ctx, other))
    theirs = (await create(client, other, oh, cron_expr="* * * * *", prompt="theirs"))["id"]
    nf = (404, {"error": "schedule not found"})
    base = f"/workspaces/{ws}/schedules/{theirs}"
    r = await client.patch(base, json={"enabled": False}, headers=h)
    assert (r.status_code, r.json()) == nf
    r = await client.delete(base, headers=h)
    assert (r.status_code, r.json()) == nf
    r = await client.post(f"{base}/run", headers=h)
    assert (r.status_code, r.json()) == nf
    r = await client.get(f"{base}/history", headers=h)
    assert (r.status_code, r.json()) == nf
    assert (await schedule_row(ctx, theirs)).enabled is True
    # and the other workspace's token does not open ours
    r = await client.get(f"/workspaces/{ws}/schedules", headers=oh)
    assert r.status_code == 401


async def test_delete_and_run_now(client_factory: ClientFactory) -> None:
    client, ctx, ws, h = await setup(client_factory)
    sid = (await create(client, ws, h, name="s", cron_expr="* * * * *", prompt="do the thing"))["id"]
    r = await client.post(f"/workspaces/{ws}/schedules/{sid}/run", headers=h)
    assert (r.status_code, r.json()) == (
        200,
        {"status": "fired", "workspace_id": ws, "prompt": "do the thing"},
    )
    row = await schedule_row(ctx, sid)
    assert (row.run_count, row.last_run_at) == (0, None)  # run-now hands the prompt back, nothing fires
    r = await client.get(f"/workspaces/{ws}/schedules/{sid}/history", headers=h)
    assert (r.status_code, r.json()) == (200, [])
    r = await client.delete(f"/workspaces/{ws}/schedules/{sid}", headers=h)
    assert (r.status_code, r.json()) == (200, {"status": "deleted"})
    r = await client.delete(f"/workspaces/{ws}/schedules/{sid}", headers=h)
    assert (r.status_code, r.json()) == (404, {"error": "schedule not found"})
    assert await schedule_row(ctx, sid) is None


async def test_routes_need_workspace_auth(client_factory: ClientFactory) -> None:
    client, _, ws, h = await setup(client_factory)
    sid = (await create(client, ws, h, cron_expr="* * * * *", prompt="p"))["id"]
    calls = [
        ("GET", f"/workspaces/{ws}/schedules"),
        ("POST", f"/workspaces/{ws}/schedules"),
        ("PATCH", f"/workspaces/{ws}/schedules/{sid}"),
        ("DELETE", f"/workspaces/{ws}/schedules/{sid}"),
        ("POST", f"/workspaces/{ws}/schedules/{sid}/run"),
        ("GET", f"/workspaces/{ws}/schedules/{sid}/history"),
    ]
    for method, url in calls:
        r = await client.request(method, url, json={})
        assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"}), url
        r = await client.request(method, url, json={}, headers=bearer("wrong"))
        assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"}), url
    r = await client.get("/admin/schedules/health")
    assert r.status_code == 401


async def test_peer_health_view(client_factory: ClientFactory) -> None:
    client = await client_factory(ADMIN_TOKEN=ADMIN)
    ctx = ctx_of(client)
    tree = await build_tree(ctx)
    be = tree["BE"]
    await create(client, be, AH, name="nightly", cron_expr="0 3 * * *", prompt="secret prompt")
    url = f"/workspaces/{be}/schedules/health"
    fe_token = await mint_token(ctx, tree["FE"])

    r = await client.get(url)
    assert (r.status_code, r.json()) == (401, {"error": "X-Workspace-ID header required"})
    for forged in ("system:cron", "webhook:github", "test:x", "channel:slack"):
        r = await client.get(url, headers={"X-Workspace-ID": forged})
        assert (r.status_code, r.json()) == (403, {"error": "invalid caller ID"}), forged
    r = await client.get(url, headers={"X-Workspace-ID": tree["FE"]})
    assert (r.status_code, r.json()) == (401, {"error": "missing caller auth token"})
    r = await client.get(url, headers={"X-Workspace-ID": tree["FE"], **bearer("nope")})
    assert (r.status_code, r.json()) == (401, {"error": "invalid caller auth token"})
    # Ops, a root of its own, is outside BE's line: no peek
    ops_token = await mint_token(ctx, tree["Ops"])
    r = await client.get(url, headers={"X-Workspace-ID": tree["Ops"], **bearer(ops_token)})
    assert (r.status_code, r.json()) == (403, {"error": "access denied"})

    r = await client.get(url, headers={"X-Workspace-ID": tree["FE"], **bearer(fe_token)})
    assert r.status_code == 200
    (item,) = r.json()
    assert list(item) == HEALTH_KEYS and item["name"] == "nightly" and "prompt" not in item

    # naming the target itself still needs the target's token once it has one
    be_token = await mint_token(ctx, be)
    r = await client.get(url, headers={"X-Workspace-ID": be})
    assert (r.status_code, r.json()) == (401, {"error": "missing caller auth token"})
    r = await client.get(url, headers={"X-Workspace-ID": be, **bearer(be_token)})
    assert r.status_code == 200


async def test_admin_health_statuses(client_factory: ClientFactory) -> None:
    client, ctx, ws, h = await setup(client_factory)
    now = datetime.now(UTC)
    never = (await create(client, ws, h, name="a-never", cron_expr="*/5 * * * *", prompt="p"))["id"]
    stale = (await create(client, ws, h, name="b-stale", cron_expr="0 * * * *", prompt="p"))["id"]
    fresh = (await create(client, ws, h, name="c-ok", cron_expr="0 9 * * *", prompt="p", enabled=False))["id"]
    await set_schedule(ctx, stale, last_run_at=now - timedelta(hours=3))
    await set_schedule(ctx, fresh, last_run_at=now - timedelta(hours=40))
    gone = await add_workspace(ctx, "Gone", status="removed")
    async with ctx.engine.begin() as conn:
        await conn.execute(
            sa.insert(workspace_schedules).values(
                id=new_id(), workspace_id=gone, name="x", cron_expr="* * * * *", prompt="p"
            )
        )

    r = await client.get("/admin/schedules/health", headers=AH)
    assert r.status_code == 200
    items = r.json()
    assert [i["schedule_id"] for i in items] == [never, stale, fresh]  # by workspace name, schedule name
    assert list(items[0]) == [
        "workspace_id",
        "workspace_name",
        "schedule_id",
        "schedule_name",
        "cron_expr",
        "last_run_at",
        "expected_next_run",
        "status",
        "stale_threshold_seconds",
    ]
    assert [(i["status"], i["stale_threshold_seconds"]) for i in items] == [
        ("never_run", 600),
        ("stale", 7200),
        ("ok", 172800),  # enabled is ignored, as upstream
    ]
    assert items[0]["workspace_name"] == "Cron Agent" and items[0]["last_run_at"] is None
    assert (
        items[1]["expected_next_run"]
        == (await client.get(f"/workspaces/{ws}/schedules", headers=h)).json()[1]["next_run_at"]
    )
