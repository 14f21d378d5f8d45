"""POST /workspaces/:id/a2a (spec 04 §1): caller auth, hierarchy, budget, URL, normalisation, mapping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ClientFactory, free_port
from tests.integration.a2a_support import StubAgent, activity, message, queue_rows, wait_for
from tests.integration.registry_support import (
    Captured,
    add_workspace,
    bearer,
    build_tree,
    ctx_of,
    mint_token,
    recorded_events,
    row,
    set_columns,
)
from workspace_server import egress
from workspace_server.a2a.caches import target_cache
from workspace_server.common.kv import url_key
from workspace_server.db.schema import workspace_token_usage


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


async def dev_client(client_factory: ClientFactory, **overrides: Any) -> httpx.AsyncClient:
    return await client_factory(MOLECULE_ENV="development", **overrides)


async def test_canvas_call_passes_reply_through_and_logs(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    events = Captured(ctx)
    target = await add_workspace(ctx, "Echo Agent", status="online", url=agent.url)
    r = await client.post(f"/workspaces/{target}/a2a", json=message("hello"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    # the agent's bytes, unchanged
    sent = agent.received[0]
    assert r.content == agent.echo(sent)
    # bare body wrapped: jsonrpc + id added, other keys dropped, messageId injected
    assert sent["jsonrpc"] == "2.0" and isinstance(sent["id"], str)
    assert sent["method"] == "message/send"
    assert isinstance(sent["params"]["message"]["messageId"], str)

    rows = await wait_for(lambda: activity(ctx, target), "a2a_receive row")
    (log_row,) = rows
    assert log_row.source_id is None and log_row.target_id == target
    assert log_row.method == "message/send" and log_row.status == "ok"
    assert log_row.summary == "message/send → Echo Agent"
    assert log_row.request_body == sent
    assert log_row.response_body == r.json()
    assert isinstance(log_row.duration_ms, int)
    await wait_for(lambda: _async(events.of("A2A_RESPONSE")), "A2A_RESPONSE")
    (resp_event,) = events.of("A2A_RESPONSE")
    assert resp_event == {
        "duration_ms": log_row.duration_ms,
        "method": "message/send",
        "response_body": r.json(),
    }
    assert list(resp_event) == sorted(resp_event)  # as Go marshals a map
    (logged,) = events.of("ACTIVITY_LOGGED")
    assert list(logged) == sorted(logged) and logged["target_id"] == target


async def _async(value: Any) -> Any:
    return value


async def test_existing_envelope_is_untouched(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory)
    target = await add_workspace(ctx_of(client), "t", status="online", url=agent.url)
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m-1", "parts": []}},
        "extra": True,
    }
    r = await client.post(f"/workspaces/{target}/a2a", json=body)
    assert r.status_code == 200
    assert agent.received == [body]


async def test_agent_error_status_is_mapped(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    agent.mode, agent.status, agent.body = "status", 500, b'{"error":"model exploded"}'
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (500, {"error": "model exploded"})
    agent.status, agent.body = 404, b"nope"
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (404, {"error": "Not Found"})
    rows = await wait_for(lambda: _rows_with(ctx, target, 2), "two error rows")
    assert [x.status for x in rows] == ["error", "error"]


async def _rows_with(ctx: Any, ws_id: str, n: int) -> list[Any] | None:
    rows = await activity(ctx, ws_id)
    return rows if len(rows) >= n else None


async def test_hierarchy_denies_uncle_to_nephew(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    tree = await build_tree(ctx)
    await set_columns(ctx, tree["SecAud"], url=agent.url)
    await set_columns(ctx, tree["FE"], url=agent.url)
    r = await client.post(
        f"/workspaces/{tree['SecAud']}/a2a", json=message("x"), headers={"X-Workspace-ID": tree["FE"]}
    )
    assert (r.status_code, r.json()) == (
        403,
        {"error": "access denied: workspaces cannot communicate per hierarchy rules"},
    )
    r = await client.post(
        f"/workspaces/{tree['FE']}/a2a", json=message("x"), headers={"X-Workspace-ID": tree["SecAud"]}
    )
    assert r.status_code == 403
    assert agent.received == []
    # siblings may talk; the caller's last_outbound_at is stamped
    await set_columns(ctx, tree["BE"], url=agent.url)
    r = await client.post(
        f"/workspaces/{tree['BE']}/a2a", json=message("x"), headers={"X-Workspace-ID": tree["FE"]}
    )
    assert r.status_code == 200

    async def stamped() -> bool:
        return (await row(ctx, tree["FE"])).last_outbound_at is not None

    await wait_for(stamped, "last_outbound_at on the caller")
    (log_row,) = await wait_for(lambda: _rows_with(ctx, tree["BE"], 1), "row on target")
    assert log_row.source_id == tree["FE"]


async def test_caller_token_rules(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    a = await add_workspace(ctx, "a", status="online", url=agent.url)
    b = await add_workspace(ctx, "b", status="online", url=agent.url)
    tok_a, tok_b = await mint_token(ctx, a), await mint_token(ctx, b)
    r = await client.post(f"/workspaces/{b}/a2a", json=message("x"), headers={"X-Workspace-ID": a})
    assert (r.status_code, r.json()) == (401, {"error": "missing caller auth token"})
    r = await client.post(
        f"/workspaces/{b}/a2a", json=message("x"), headers={"X-Workspace-ID": a, **bearer(tok_b)}
    )
    assert (r.status_code, r.json()) == (401, {"error": "invalid caller auth token"})
    assert agent.received == []
    r = await client.post(
        f"/workspaces/{b}/a2a", json=message("x"), headers={"X-Workspace-ID": a, **bearer(tok_a)}
    )
    assert r.status_code == 200
    # a self-call needs no token
    r = await client.post(f"/workspaces/{a}/a2a", json=message("x"), headers={"X-Workspace-ID": a})
    assert r.status_code == 200


@pytest.mark.parametrize("caller", ["system:restart-context", "webhook:github", "test:x", "channel:slack"])
async def test_system_prefix_header_refused(
    client_factory: ClientFactory, agent: StubAgent, caller: str
) -> None:
    client = await dev_client(client_factory)
    target = await add_workspace(ctx_of(client), "t", status="online", url=agent.url)
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"), headers={"X-Workspace-ID": caller})
    assert (r.status_code, r.json()) == (403, {"error": "invalid caller ID"})
    assert agent.received == []


async def test_system_caller_in_process_is_logged_as_text(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    result = await ctx.a2a.proxy(target, json.dumps(message("wake")).encode(), "system:restart-context")
    assert result.status == 200 and result.error is None
    (log_row,) = await wait_for(lambda: _rows_with(ctx, target, 1), "row")
    assert log_row.source_id == "system:restart-context"


async def test_budget_exceeded_is_402(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(
        ctx, "t", status="online", url=agent.url, budget_limit=100, monthly_spend=100
    )
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (402, {"error": "workspace budget limit exceeded"})
    await set_columns(ctx, target, monthly_spend=99)
    target_cache(ctx).drop(target)  # a direct DB write announces nothing; the API paths emit events
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert r.status_code == 200
    assert len(agent.received) == 1


async def test_unreachable_agent_is_502_with_failure_row(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "Gone", status="online", url=f"http://127.0.0.1:{free_port()}")
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (502, {"error": "failed to reach workspace agent"})
    (log_row,) = await wait_for(lambda: _rows_with(ctx, target, 1), "failure row")
    assert log_row.status == "error" and log_row.summary.startswith("A2A request to Gone failed: ")
    assert log_row.error_detail and log_row.request_body["params"]["message"]["parts"][0]["text"] == "x"
    assert await queue_rows(ctx) == []


async def test_url_resolution_errors(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    woken: list[str] = []

    async def restart(ws_id: str) -> None:
        woken.append(ws_id)

    ctx.restart_hook = restart
    r = await client.post("/workspaces/00000000-0000-0000-0000-00000000abcd/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    r = await client.post("/workspaces/not-a-uuid/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (404, {"error": "workspace not found"})
    no_url = await add_workspace(ctx, "n", status="offline")
    r = await client.post(f"/workspaces/{no_url}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (503, {"error": "workspace has no URL", "status": "offline"})
    asleep = await add_workspace(ctx, "h", status="hibernated")
    r = await client.post(f"/workspaces/{asleep}/a2a", json=message("x"))
    assert r.status_code == 503 and r.headers["retry-after"] == "15"
    assert r.json() == {
        "error": "workspace is waking from hibernation — retry in ~15 seconds",
        "retry_after": 15,
        "waking": True,
    }
    await wait_for(lambda: _async(woken == [asleep]), "restart hook")


async def test_a_registration_at_a_new_url_takes_the_next_call_there(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    """The target's URL comes from the cache (a Redis round trip with replicas) at most once per
    TargetCache.TTL; a registration announces its URL (WORKSPACE_ONLINE, which crosses replicas), and the
    very next call goes to the new address, not the remembered one."""
    client = await dev_client(client_factory)
    target = await add_workspace(ctx_of(client), "t", status="provisioning")
    moved = StubAgent()
    try:
        first = agent.url.replace("127.0.0.1", "localhost")  # registration refuses loopback literals
        card = {"name": "t"}
        r = await client.post("/registry/register", json={"id": target, "url": first, "agent_card": card})
        assert r.status_code == 200, r.text
        auth = bearer(r.json()["auth_token"])
        assert (await client.post(f"/workspaces/{target}/a2a", json=message("one"))).status_code == 200
        second = moved.url.replace("127.0.0.1", "localhost")
        body = {"id": target, "url": second, "agent_card": card}
        assert (await client.post("/registry/register", json=body, headers=auth)).status_code == 200
        assert (await client.post(f"/workspaces/{target}/a2a", json=message("two"))).status_code == 200
        assert [len(agent.received), len(moved.received)] == [1, 1]
    finally:
        moved.close()


async def test_invalid_json_is_400_after_url_resolution(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client = await dev_client(client_factory)
    target = await add_workspace(ctx_of(client), "t", status="online", url=agent.url)
    unencodable = (
        b'{"params":{"message":{"parts":[{"text":"\\ud800"}]}}}',  # a lone surrogate: no UTF-8 for it
        b'{"params":{"message":{"parts":[{"text":"\xed\xa0\x80"}]}}}',  # the same as raw bytes
        b'{"params":{"n":1e400}}',  # beyond float range: re-encoded it would be `Infinity`
        b'{"params":{"n":NaN}}',
    )
    for raw in (b"{nope", b"[1,2]", b'"text"', *unencodable):
        r = await client.post(f"/workspaces/{target}/a2a", content=raw)
        assert (r.status_code, r.json()) == (400, {"error": "invalid JSON"}), raw
    r = await client.post("/workspaces/00000000-0000-0000-0000-00000000abcd/a2a", content=b"{nope")
    assert r.status_code == 404
    assert agent.received == []


async def test_ssrf_guard_and_backend_trust(client_factory: ClientFactory, agent: StubAgent) -> None:
    """Issue 11 §2: production mode (ADMIN_TOKEN) refuses loopback unless this server assigned the URL."""
    client = await client_factory(ADMIN_TOKEN="adm")
    ctx = ctx_of(client)
    send = ctx.a2a.proxy
    body = json.dumps(message("x")).encode()
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    r = await send(target, body)
    assert (r.status, r.error) == (502, {"error": "workspace URL is not publicly routable"})
    metadata = await add_workspace(ctx, "m", status="online", url="http://169.254.169.254/latest")
    assert (await send(metadata, body)).status == 502
    assert agent.received == []
    # a URL our own backend assigned is trusted: recorded when the orchestrator started the agent ...
    ctx.provisioner = object()
    egress.assigned(ctx).record(target, agent.url)
    assert (await send(target, body)).status == 200 and len(agent.received) == 1
    # ... or, after a restart of this server, the provisioner's http://127.0.0.1:<port> on a
    # non-external row (registration can never write that form)
    restarted = await add_workspace(ctx, "r", status="online", url=agent.url, runtime="langgraph")
    assert (await send(restarted, body)).status == 200 and len(agent.received) == 2
    external = await add_workspace(ctx, "e", status="online", url=agent.url, runtime="external")
    assert (await send(external, body)).status == 502
    # ...but not when it came from the cache instead of the row (the agent could have registered it)
    other = await add_workspace(ctx, "o", status="online", url="http://127.0.0.1:1")
    await ctx.kv.set(url_key(other), agent.url, 60)
    assert (await send(other, body)).status == 502
    # a recorded URL is trusted for its own workspace only
    egress.assigned(ctx).record(other, "http://127.0.0.1:1")
    assert (await send(other, body)).status == 502
    assert len(agent.received) == 2


async def test_open_mode_dials_loopback_not_private(client_factory: ClientFactory, agent: StubAgent) -> None:
    """Open bootstrap mode (no ADMIN_TOKEN, no MOLECULE_ENV): loopback agents work, private ranges do not."""
    client = await client_factory()
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert r.status_code == 200 and len(agent.received) == 1
    for inward in (
        "http://10.0.0.1:8000",
        "http://167772161/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fd00::1]/",
    ):
        ws = await add_workspace(ctx, "p", status="online", url=inward)
        r = await client.post(f"/workspaces/{ws}/a2a", json=message("x"))
        assert (r.status_code, r.json()) == (502, {"error": "workspace URL is not publicly routable"}), inward


async def test_name_resolving_inward_is_refused_at_connect_time(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    """A name is judged by the connector's resolver when the connection opens, not by a check before:
    `localhost` reaches the loopback stub, which production mode refuses; nothing arrives, no row is
    written, nothing is queued."""
    client = await client_factory(ADMIN_TOKEN="adm")
    ctx = ctx_of(client)
    port = agent.url.rsplit(":", 1)[1]
    target = await add_workspace(ctx, "t", status="online", url=f"http://localhost:{port}")
    r = await ctx.a2a.proxy(target, json.dumps(message("x")).encode())
    assert (r.status, r.error) == (502, {"error": "workspace URL is not publicly routable"})
    assert agent.received == []
    assert await queue_rows(ctx) == []
    allowed = await client_factory(ADMIN_TOKEN="adm", EGRESS_ALLOW_CIDRS="127.0.0.0/8,::1")
    actx = ctx_of(allowed)
    target = await add_workspace(actx, "t", status="online", url=f"http://localhost:{port}")
    r = await actx.a2a.proxy(target, json.dumps(message("x")).encode())
    assert r.status == 200 and len(agent.received) == 1


async def test_dev_mode_never_unblocks_metadata(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "m", status="online", url="http://169.254.169.254/")
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (502, {"error": "workspace URL is not publicly routable"})


async def test_body_cut_after_headers(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    agent.mode = "cut"
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (
        502,
        {"delivery_confirmed": True, "error": "failed to read agent response"},
    )
    (log_row,) = await wait_for(lambda: _rows_with(ctx, target, 1), "success row")
    assert log_row.status == "ok" and log_row.response_body is None
    assert await queue_rows(ctx) == []


async def test_idle_timeout_is_not_busy(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory, A2A_IDLE_TIMEOUT_SECONDS=1)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "Quiet", status="online", url=agent.url)
    agent.mode = "hang"
    r = await client.post(f"/workspaces/{target}/a2a", json=message("think hard", "m-idle"))
    assert r.status_code == 504
    assert r.json()["timeout"] is True and "idle timeout" in r.json()["error"]
    # nothing queued: the agent has the message, a resend would deliver it twice
    assert await queue_rows(ctx) == []
    assert len(agent.received) == 1
    (log_row,) = await wait_for(lambda: _rows_with(ctx, target, 1), "failure row")
    assert log_row.status == "error"


async def test_idle_window_per_workspace_override(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory, A2A_IDLE_TIMEOUT_SECONDS=3600)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    ctx.runtime_overrides[target] = {"capabilities": {}, "idle_timeout_seconds": 1}
    agent.mode = "hang"
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert r.status_code == 504


async def test_dead_container_triggers_restart(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    restarted: list[str] = []

    class Backend:
        async def is_running(self, ws_id: str) -> bool:
            return False

    async def restart(ws_id: str) -> None:
        restarted.append(ws_id)

    ctx.provisioner = Backend()
    ctx.restart_hook = restart
    target = await add_workspace(ctx, "t", status="online", url=f"http://127.0.0.1:{free_port()}")
    await ctx.kv.set(url_key(target), f"http://127.0.0.1:{free_port()}", 60)
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert (r.status_code, r.json()) == (
        503,
        {"error": "workspace agent unreachable — container restart triggered", "restarting": True},
    )
    assert (await row(ctx, target)).status == "offline"
    assert ("WORKSPACE_OFFLINE", {}) in await recorded_events(ctx, target)
    assert await ctx.kv.get(url_key(target)) is None
    await wait_for(lambda: _async(restarted == [target]), "restart hook")


async def test_external_runtime_is_never_restarted(client_factory: ClientFactory) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)

    class Backend:
        async def is_running(self, ws_id: str) -> bool:
            return False

    ctx.provisioner = Backend()
    target = await add_workspace(
        ctx, "t", status="online", runtime="external", url=f"http://127.0.0.1:{free_port()}"
    )
    r = await client.post(f"/workspaces/{target}/a2a", json=message("x"))
    assert r.status_code == 502
    assert (await row(ctx, target)).status == "online"


async def test_token_usage_is_accumulated(client_factory: ClientFactory, agent: StubAgent) -> None:
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    agent.mode, agent.status = "status", 200
    agent.body = b'{"jsonrpc":"2.0","id":1,"result":{"usage":{"input_tokens":1000,"output_tokens":100}}}'
    for _ in range(2):
        assert (await client.post(f"/workspaces/{target}/a2a", json=message("x"))).status_code == 200

    async def usage() -> Any:
        async with ctx.engine.connect() as conn:
            r = (await conn.execute(sa.select(workspace_token_usage))).first()
        return r if r is not None and r.call_count == 2 else None

    u = await wait_for(usage, "usage row")
    assert (u.workspace_id, u.input_tokens, u.output_tokens) == (target, 2000, 200)
    assert u.estimated_cost_usd == pytest.approx(2000 * 3e-6 + 200 * 15e-6)


async def test_metrics_route_reports_todays_usage(client_factory: ClientFactory, agent: StubAgent) -> None:
    """GET /workspaces/:id/metrics (WorkspaceAuth): today's UTC sums, cost as a %.6f string."""
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    token = await mint_token(ctx, target)
    empty = await client.get(f"/workspaces/{target}/metrics", headers=bearer(token))
    assert empty.status_code == 200
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert empty.json() == {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_calls": 0,
        "estimated_cost_usd": "0.000000",
        "period_start": f"{today}T00:00:00Z",
        "period_end": f"{tomorrow}T00:00:00Z",
    }
    assert list(empty.json()) == [  # the reference's field order
        "input_tokens",
        "output_tokens",
        "total_calls",
        "estimated_cost_usd",
        "period_start",
        "period_end",
    ]
    agent.mode, agent.status = "status", 200
    agent.body = b'{"jsonrpc":"2.0","id":1,"result":{"usage":{"input_tokens":1000,"output_tokens":100}}}'
    for _ in range(2):
        assert (await client.post(f"/workspaces/{target}/a2a", json=message("x"))).status_code == 200

    async def counted() -> Any:
        r = await client.get(f"/workspaces/{target}/metrics", headers=bearer(token))
        return r.json() if r.json()["total_calls"] == 2 else None

    got = await wait_for(counted, "two calls in the metrics")
    assert (got["input_tokens"], got["output_tokens"], got["estimated_cost_usd"]) == (2000, 200, "0.009000")


async def test_metrics_route_auth_and_missing_workspace(client_factory: ClientFactory) -> None:
    client = await client_factory()
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online")
    other = await add_workspace(ctx, "o", status="online")
    other_token = await mint_token(ctx, other)
    await mint_token(ctx, target)
    r = await client.get(f"/workspaces/{target}/metrics")
    assert (r.status_code, r.json()) == (401, {"error": "missing workspace auth token"})
    r = await client.get(f"/workspaces/{target}/metrics", headers=bearer(other_token))
    assert (r.status_code, r.json()) == (401, {"error": "invalid workspace auth token"})
    dev = await dev_client(client_factory)
    missing = await dev.get("/workspaces/00000000-0000-4000-8000-0000000000ff/metrics")
    assert (missing.status_code, missing.json()) == (404, {"error": "workspace not found"})


async def test_message_with_nul_is_delivered_and_logged(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    """A2A text may carry U+0000, which Postgres text/jsonb cannot store: the message is delivered as
    sent and its activity row is still written (on Postgres with U+FFFD in place of the NUL)."""
    client = await dev_client(client_factory)
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "Echo Agent", status="online", url=agent.url)
    body = json.dumps(message("a\x00b")).encode()  # the JSON escape \u0000 on the wire
    assert b"\\u0000" in body
    r = await client.post(
        f"/workspaces/{target}/a2a", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    assert agent.received[0]["params"]["message"]["parts"][0]["text"] == "a\x00b"
    rows = await wait_for(lambda: activity(ctx, target), "a2a_receive row")
    logged = rows[0].request_body["params"]["message"]["parts"][0]["text"]
    assert logged == ("a\ufffdb" if ctx.engine.dialect.name == "postgresql" else "a\x00b")


async def test_production_canvas_call_needs_a_credential(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    """Spec 04 BUG 8: a header-less call was let in as the canvas with no credential. In production mode it
    needs WorkspaceAuth's credentials for the target (the reference canvas sends its admin bearer), and a
    call naming the target as its own caller needs the target's token."""
    client = await client_factory(ADMIN_TOKEN="adm", EGRESS_ALLOW_CIDRS="127.0.0.1/32")
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    other = await add_workspace(ctx, "o", status="online", url=agent.url)
    own, others = await mint_token(ctx, target), await mint_token(ctx, other)
    url = f"/workspaces/{target}/a2a"
    refused = [
        await client.post(url, json=message("anon")),
        await client.post(url, json=message("origin"), headers={"Origin": "http://localhost:3000"}),
        await client.post(url, json=message("wrong"), headers=bearer(others)),
        await client.post(url, json=message("self"), headers={"X-Workspace-ID": target}),
    ]
    assert [(r.status_code, r.json()["error"]) for r in refused] == [
        (401, "missing workspace auth token"),
        (401, "missing workspace auth token"),
        (401, "invalid workspace auth token"),
        (401, "missing caller auth token"),
    ]
    assert agent.received == []
    for headers in (bearer("adm"), bearer(own), {"X-Workspace-ID": target, **bearer(own)}):
        r = await client.post(url, json=message("ok"), headers=headers)
        assert r.status_code == 200, r.text
    assert len(agent.received) == 3
