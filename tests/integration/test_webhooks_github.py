"""POST /webhooks/github[/:id] (spec 06 §3.7): signature, schedule triggers, events forwarded to agents."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.integration.a2a_support import StubAgent, activity, wait_for
from tests.integration.registry_support import add_workspace, bearer, ctx_of
from tests.integration.test_schedules_routes import schedule_row
from workspace_server.context import AppContext

SECRET = "s3cret"
ADMIN = "admin-secret"


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


def signed(event: str, payload: Any, secret: str = SECRET, raw: bytes | None = None) -> dict[str, Any]:
    body = raw if raw is not None else json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "delivery-1",
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }
    return {"content": body, "headers": headers}


async def setup(client_factory: ClientFactory, **overrides: Any) -> tuple[httpx.AsyncClient, AppContext]:
    settings = {
        "GITHUB_WEBHOOK_SECRET": f"  {SECRET}\n",
        "ADMIN_TOKEN": ADMIN,
        "MOLECULE_ENV": "development",
        "EGRESS_ALLOW_CIDRS": "127.0.0.1/32",  # ADMIN_TOKEN: production egress; the stub agent is loopback
    }
    client = await client_factory(**{**settings, **overrides})
    return client, ctx_of(client)


async def schedule(client: httpx.AsyncClient, ws: str, name: str, enabled: bool = True) -> str:
    body = {"name": name, "cron_expr": "0 0 1 1 *", "prompt": "work", "enabled": enabled}
    r = await client.post(f"/workspaces/{ws}/schedules", json=body, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_off_without_a_secret_and_signature_checked(client_factory: ClientFactory) -> None:
    client, _ = await setup(client_factory, GITHUB_WEBHOOK_SECRET="  ")
    r = await client.post("/webhooks/github", **signed("issues", {"action": "opened"}))
    assert (r.status_code, r.json()) == (503, {"error": "github webhook not configured"})

    client, _ = await setup(client_factory)
    bad = {"error": "invalid webhook signature"}
    for kwargs in (
        signed("issues", {"action": "opened"}, secret="other"),
        {"content": b"{}", "headers": {"X-GitHub-Event": "issues"}},
        {"content": b"{}", "headers": {"X-GitHub-Event": "issues", "X-Hub-Signature-256": "sha256=zz"}},
    ):
        r = await client.post("/webhooks/github", **kwargs)
        assert (r.status_code, r.json()) == (401, bad)
    # the signature covers the exact bytes: a re-serialised body does not pass
    good = signed("issues", {"action": "opened"})
    r = await client.post("/webhooks/github", content=good["content"] + b" ", headers=good["headers"])
    assert r.status_code == 401
    r = await client.post("/webhooks/github", **signed("issues", None, raw=b"{not json"))
    assert (r.status_code, r.json()) == (400, {"error": "invalid JSON payload"})
    r = await client.post("/webhooks/github", **signed("issues", None, raw=b"x" * ((1 << 20) + 1)))
    assert r.status_code == 413


async def test_issue_opened_makes_pick_up_work_schedules_due(client_factory: ClientFactory) -> None:
    client, ctx = await setup(client_factory)
    a = await add_workspace(ctx, "A", status="online")
    b = await add_workspace(ctx, "B", status="online")
    hit = [await schedule(client, a, "Pick-Up-Work hourly"), await schedule(client, b, "daily pick-up-work")]
    off = await schedule(client, a, "pick-up-work (paused)", enabled=False)
    other = await schedule(client, b, "pr review")
    before = datetime.now(UTC)

    r = await client.post(
        "/webhooks/github", **signed("issues", {"action": "opened", "issue": {"number": 7}})
    )
    assert (r.status_code, r.json()) == (
        200,
        {"status": "triggered", "event": "issues", "action": "opened", "schedules_affected": 2},
    )
    for sid in hit:
        assert (await schedule_row(ctx, sid)).next_run_at <= datetime.now(UTC)
    for sid in (off, other):
        assert (await schedule_row(ctx, sid)).next_run_at > before + timedelta(days=1)

    r = await client.post("/webhooks/github", **signed("pull_request_review", {"action": "submitted"}))
    assert r.json()["schedules_affected"] == 1
    assert (await schedule_row(ctx, other)).next_run_at <= datetime.now(UTC)

    for event, action in (("issues", "closed"), ("pull_request_review", "dismissed"), ("ping", "")):
        r = await client.post("/webhooks/github", **signed(event, {"action": action}))
        assert (r.status_code, r.json()) == (202, {"status": "ignored", "reason": "unsupported event type"})


async def test_comment_is_forwarded_to_the_workspace(client_factory: ClientFactory, agent: StubAgent) -> None:
    client, ctx = await setup(client_factory)
    ws = await add_workspace(ctx, "Dev", status="online", url=agent.url)
    payload = {
        "action": "created",
        "issue": {"number": 12, "title": "Crash on start"},
        "comment": {"body": "Still failing on main", "html_url": "https://github.com/o/r/issues/12#c1"},
        "repository": {"full_name": "o/r"},
        "sender": {"login": "alice"},
    }
    r = await client.post(f"/webhooks/github/{ws}", **signed("issue_comment", payload))
    assert r.status_code == 200
    (sent,) = agent.received
    assert r.content == agent.echo(sent)  # the agent's reply, passed through
    message = sent["params"]["message"]
    (part,) = message["parts"]
    assert part["kind"] == "text"
    for fragment in ("o/r#12", "Crash on start", "alice", "Still failing on main", "issues/12#c1"):
        assert fragment in part["text"]
    assert message["metadata"] == {
        "source": "github",
        "event": "issue_comment",
        "action": "created",
        "delivery_id": "delivery-1",
        "repository": "o/r",
        "sender": "alice",
        "issue_number": 12,
        "comment_url": "https://github.com/o/r/issues/12#c1",
    }
    rows = await wait_for(lambda: activity(ctx, ws), "the a2a_receive row")
    assert rows[0].source_id == "webhook:github"


async def test_failed_workflow_run_goes_to_the_payloads_workspace(
    client_factory: ClientFactory, agent: StubAgent
) -> None:
    client, ctx = await setup(client_factory)
    ws = await add_workspace(ctx, "CI", status="online", url=agent.url)
    run = {
        "name": "tests",
        "id": 99,
        "run_number": 41,
        "conclusion": "failure",
        "head_branch": "main",
        "head_sha": "abcdef1234567",
        "html_url": "https://github.com/o/r/actions/runs/99",
        "event": "push",
    }
    payload = {
        "action": "completed",
        "workflow_run": run,
        "repository": {"full_name": "o/r"},
        "workspace_id": ws,
    }
    r = await client.post("/webhooks/github", **signed("workflow_run", payload))
    assert r.status_code == 200
    message = agent.received[0]["params"]["message"]
    assert "main@abcdef1" in message["parts"][0]["text"] and "#41" in message["parts"][0]["text"]
    meta = message["metadata"]
    assert (meta["workflow_name"], meta["run_id"], meta["conclusion"], meta["trigger_event"]) == (
        "tests",
        99,
        "failure",
        "push",
    )

    for conclusion in ("success", "skipped", "neutral"):
        quiet = {**payload, "workflow_run": {**run, "conclusion": conclusion}}
        r = await client.post("/webhooks/github", **signed("workflow_run", quiet))
        assert r.status_code == 202
    assert len(agent.received) == 1

    del payload["workspace_id"]
    r = await client.post("/webhooks/github", **signed("workflow_run", payload))
    assert (r.status_code, r.json()) == (400, {"error": "missing workspace id"})
