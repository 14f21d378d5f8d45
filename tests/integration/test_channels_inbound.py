"""Inbound channel messages end to end (spec 06 §3.6): a signed provider delivery (or a Telegram poll)
→ A2A `message/send` to a real agent through the proxy → the reply at the provider's local fake.
Bad or stale signatures are 401. On both databases."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey
from slack_sdk.signature import SignatureVerifier

from tests.conftest import ClientFactory
from tests.integration.a2a_support import StubAgent, activity, wait_for
from tests.integration.channels_support import TELEGRAM_TOKEN, FakeProviders, tg_update
from tests.integration.registry_support import Captured, add_workspace, ctx_of

SIGNING = "slack-signing-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    f = await FakeProviders().start()
    yield f
    await f.close()


@pytest.fixture
def agent() -> Iterator[StubAgent]:
    a = StubAgent()
    yield a
    a.close()


async def _setup(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent, channel: dict[str, Any], **kw: Any
) -> tuple[httpx.AsyncClient, str, str]:
    client = await client_factory(MOLECULE_ENV="development", **fake.settings(), **kw)
    ws = await add_workspace(ctx_of(client), "Echo Agent", status="online", url=agent.url)
    r = await client.post(f"/workspaces/{ws}/channels", json=channel)
    assert r.status_code == 201, r.text
    return client, ws, r.json()["id"]


def _slack_headers(body: bytes, ts: int | None = None, secret: str = SIGNING) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time()))
    sig = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": sig, "Content-Type": "application/json"}


async def test_slack_event_reaches_agent_and_reply_is_posted(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    config = {
        "bot_token": "xoxb-0000-token",
        "channel_id": "C42",
        "signing_secret": SIGNING,
        "username": "Echo",
    }
    client, ws, cid = await _setup(client_factory, fake, agent, {"channel_type": "slack", "config": config})
    events = Captured(ctx_of(client))

    challenge = json.dumps({"type": "url_verification", "challenge": "abc"}).encode()
    r = await client.post("/webhooks/slack", content=challenge, headers=_slack_headers(challenge))
    assert r.json() == {"challenge": "abc"}

    event = {
        "type": "event_callback",
        "event": {
            "type": "message",
            "channel": "C42",
            "user": "U1",
            "text": "[echo] hello there",
            "ts": "1.1",
        },
    }
    body = json.dumps(event).encode()
    for headers in (
        _slack_headers(body, secret="wrong"),
        _slack_headers(body, ts=int(time.time()) - 3600),  # stale: a replay
        {"Content-Type": "application/json"},
    ):
        r = await client.post("/webhooks/slack", content=body, headers=headers)
        assert (r.status_code, r.json()) == (401, {"error": "invalid signature"})
    r = await client.post("/webhooks/slack", content=body, headers=_slack_headers(body))
    assert r.json() == {"status": "accepted"}

    posted = await wait_for(lambda: _async(fake.of("chat.postMessage")), "reply at the Slack fake")
    assert posted[0]["channel"] == "C42" and posted[0]["text"] == "echo: hello there"
    # a redelivery (Slack retries; a mention is also an app_mention) reaches the agent once
    r = await client.post("/webhooks/slack", content=body, headers=_slack_headers(body))
    assert r.json() == {"status": "accepted"}
    await _settle(client)
    assert len(agent.received) == 1
    sent = agent.received[0]
    assert sent["params"]["message"]["parts"][0]["text"] == "hello there"  # the [slug] routed and stripped
    meta = sent["params"]["metadata"]
    assert meta["source"] == "slack" and meta["channel_id"] == cid and meta["chat_id"] == "C42"
    rows = await wait_for(lambda: activity(ctx_of(client), ws), "a2a_receive row")
    assert rows[0].source_id == "channel:slack"
    await wait_for(lambda: _async(events.of("CHANNEL_MESSAGE")), "CHANNEL_MESSAGE")
    assert events.of("CHANNEL_MESSAGE")[0]["direction"] == "inbound"

    # an unknown slug answers with the ones there are
    other = json.dumps({**event, "event": {**event["event"], "text": "[nobody] hi"}}).encode()
    r = await client.post("/webhooks/slack", content=other, headers=_slack_headers(other))
    assert r.json() == {"status": "unknown_agent", "requested_slug": "nobody", "available_slugs": ["[Echo]"]}


async def test_slack_allowed_users_filter(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    config = {"bot_token": "xoxb-0000-token", "channel_id": "C42", "signing_secret": SIGNING}
    client, _, _ = await _setup(
        client_factory, fake, agent, {"channel_type": "slack", "config": config, "allowed_users": ["U9"]}
    )
    event = {
        "type": "event_callback",
        "event": {"type": "message", "channel": "C42", "user": "U1", "text": "x"},
    }
    body = json.dumps(event).encode()
    r = await client.post("/webhooks/slack", content=body, headers=_slack_headers(body))
    assert r.json() == {"status": "accepted"}
    await _settle(client)
    assert agent.received == [] and fake.of("chat.postMessage") == []


async def test_telegram_webhook_needs_secret_and_replies(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    config = {"bot_token": TELEGRAM_TOKEN, "chat_id": "77", "webhook_secret": "tg-secret-value"}
    client, _, _ = await _setup(client_factory, fake, agent, {"channel_type": "telegram", "config": config})
    update = tg_update(1, 77, "hi bot")
    r = await client.post(
        "/webhooks/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"}
    )
    assert (r.status_code, r.json()) == (401, {"error": "invalid signature"})
    r = await client.post(
        "/webhooks/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "tg-secret-value"}
    )
    assert r.json() == {"status": "accepted"}
    sent = await wait_for(lambda: _async(fake.of("sendMessage")), "reply at the Telegram fake")
    assert sent[0]["chat_id"] == "77" and sent[0]["text"] == "echo: hi bot"
    # a command is answered locally, as a poller answers it; the agent never sees it
    r = await client.post(
        "/webhooks/telegram",
        json=tg_update(3, 77, "/start@test_bot"),
        headers={"X-Telegram-Bot-Api-Secret-Token": "tg-secret-value"},
    )
    assert r.json() == {"status": "accepted"}
    await wait_for(lambda: _async(len(fake.of("sendMessage")) == 2), "the /start answer")
    assert fake.of("sendMessage")[1]["text"] == "Connected. This chat's id is 77"
    assert len(agent.received) == 1
    # another chat than the channel's: no channel
    r = await client.post(
        "/webhooks/telegram",
        json=tg_update(2, 78, "x"),
        headers={"X-Telegram-Bot-Api-Secret-Token": "tg-secret-value"},
    )
    assert r.json() == {"status": "no_channel"}


async def test_telegram_long_polling_on_the_leader(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    config = {"bot_token": TELEGRAM_TOKEN, "chat_id": "77"}
    client, ws, cid = await _setup(
        client_factory, fake, agent, {"channel_type": "telegram", "config": config}, run_loops=True
    )
    # a webhook-driven row (it has a webhook secret) is not polled: polling would delete its webhook
    hooked = await add_workspace(ctx_of(client), "Hooked", status="online", url=agent.url)
    webhook_cfg = {**config, "webhook_secret": "tg-secret-value"}
    r = await client.post(
        f"/workspaces/{hooked}/channels", json={"channel_type": "telegram", "config": webhook_cfg}
    )
    hooked_id = r.json()["id"]
    fake.updates = [tg_update(5, 77, "polled hello")]
    sent = await wait_for(lambda: _async(fake.of("sendMessage")), "reply to a polled message", timeout=30)
    assert sent[0]["text"] == "echo: polled hello"
    assert fake.of("deleteWebhook")  # polling and a webhook exclude each other
    # disabled: its poller stops
    from workspace_server.channels.state import state_of

    st = state_of(ctx_of(client))
    assert cid in st.pollers and hooked_id not in st.pollers
    # the bot removed from the chat it serves: the channel is disabled and its poller stops
    kicked = {
        "update_id": 6,
        "my_chat_member": {
            "chat": {"id": 77, "type": "group", "title": "Team"},
            "from": {"id": 42, "is_bot": False, "first_name": "Alice"},
            "date": 0,
            "old_chat_member": {
                "status": "member",
                "user": {"id": 123456, "is_bot": True, "first_name": "Bot"},
            },
            "new_chat_member": {
                "status": "kicked",
                "until_date": 0,
                "user": {"id": 123456, "is_bot": True, "first_name": "Bot"},
            },
        },
    }
    fake.updates = [kicked]
    await wait_for(lambda: _async(cid not in st.pollers), "poller stopped")
    (item,) = (await client.get(f"/workspaces/{ws}/channels")).json()
    assert item["enabled"] is False
    # enabled again: polled again; deleted: stopped
    await client.patch(f"/workspaces/{ws}/channels/{cid}", json={"enabled": True})
    await wait_for(lambda: _async(cid in st.pollers), "poller restarted")
    # a changed row (its allowed users here) restarts the poller, which holds the row as it was
    before = st.pollers[cid].task
    await client.patch(f"/workspaces/{ws}/channels/{cid}", json={"allowed_users": ["42"]})
    await wait_for(lambda: _async(cid in st.pollers and st.pollers[cid].task is not before), "poller renewed")
    await client.delete(f"/workspaces/{ws}/channels/{cid}")
    await wait_for(lambda: _async(cid not in st.pollers), "poller stopped after delete")


async def test_discord_interactions(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    key = SigningKey.generate()
    config = {
        "webhook_url": "https://discord.com/api/webhooks/1/tok",
        "public_key": key.verify_key.encode().hex(),
    }
    client, _, _ = await _setup(client_factory, fake, agent, {"channel_type": "discord", "config": config})

    def signed(
        payload: dict[str, Any], ts: int | None = None, k: SigningKey = key
    ) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload).encode()
        stamp = str(ts if ts is not None else int(time.time()))
        sig = k.sign(stamp.encode() + body).signature.hex()
        return body, {
            "X-Signature-Ed25519": sig,
            "X-Signature-Timestamp": stamp,
            "Content-Type": "application/json",
        }

    body, headers = signed({"type": 1})
    assert (await client.post("/webhooks/discord", content=body, headers=headers)).json() == {"type": 1}
    for body, headers in (signed({"type": 1}, k=SigningKey.generate()), signed({"type": 1}, ts=1)):
        r = await client.post("/webhooks/discord", content=body, headers=headers)
        assert (r.status_code, r.json()) == (401, {"error": "invalid signature"})
    cmd = {
        "type": 2,
        "id": "9",
        "application_id": "555",
        "token": "itok",
        "channel_id": "D1",
        "data": {"name": "ask", "options": [{"name": "q", "value": "status?"}]},
        "member": {"user": {"id": "u1", "username": "bob"}},
    }
    body, headers = signed(cmd)
    assert (await client.post("/webhooks/discord", content=body, headers=headers)).json() == {"type": 5}
    follow = await wait_for(lambda: _async(fake.of("/webhooks/555/itok")), "follow-up at the Discord fake")
    assert follow[0] == {"content": "echo: /ask status?"}
    assert agent.received[0]["params"]["metadata"]["extra"] == {"application_id": "555"}  # no token


async def test_lark_events(client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent) -> None:
    config = {"webhook_url": "https://open.feishu.cn/open-apis/bot/v2/hook/abc", "verify_token": "lark-vt"}
    client, _, _ = await _setup(client_factory, fake, agent, {"channel_type": "lark", "config": config})
    r = await client.post(
        "/webhooks/lark", json={"type": "url_verification", "challenge": "c1", "token": "lark-vt"}
    )
    assert r.json() == {"challenge": "c1"}
    r = await client.post(
        "/webhooks/lark", json={"type": "url_verification", "challenge": "c1", "token": "bad"}
    )
    assert (r.status_code, r.json()) == (401, {"error": "invalid signature"})
    event = {
        "schema": "2.0",
        "header": {"event_type": "im.message.receive_v1", "token": "lark-vt"},
        "event": {
            "sender": {"sender_id": {"open_id": "ou_1"}},
            "message": {
                "message_id": "m1",
                "chat_id": "oc_1",
                "message_type": "text",
                "content": json.dumps({"text": "hola"}),
            },
        },
    }
    assert (await client.post("/webhooks/lark", json=event)).json() == {"status": "accepted"}
    posted = await wait_for(
        lambda: _async(fake.of("/lark/open-apis/bot/v2/hook/abc")), "reply at the Lark fake"
    )
    assert posted[0] == {"msg_type": "text", "content": {"text": "echo: hola"}}


async def test_lark_encrypted_events(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    """With an encrypt key: `X-Lark-Signature` checked, the body decrypted (lark-oapi's AESCipher)."""
    import base64
    import hashlib
    import os

    from Crypto.Cipher import AES

    key = "lark-encrypt-key"
    config = {
        "webhook_url": "https://open.larksuite.com/open-apis/bot/v2/hook/xyz",
        "verify_token": "lark-vt",
        "encrypt_key": key,
    }
    client, _, _ = await _setup(client_factory, fake, agent, {"channel_type": "lark", "config": config})

    def sealed(event: dict[str, Any], sign_key: str = key) -> tuple[bytes, dict[str, str]]:
        plain = json.dumps(event).encode()
        pad = 16 - len(plain) % 16
        iv = os.urandom(16)
        cipher = AES.new(hashlib.sha256(key.encode()).digest(), AES.MODE_CBC, iv)
        enc = base64.b64encode(iv + cipher.encrypt(plain + bytes([pad]) * pad)).decode()
        body = json.dumps({"encrypt": enc}).encode()
        ts, nonce = str(int(time.time())), "n1"
        sig = hashlib.sha256(ts.encode() + nonce.encode() + sign_key.encode() + body).hexdigest()
        headers = {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": sig}
        return body, {**headers, "Content-Type": "application/json"}

    event = {
        "schema": "2.0",
        "header": {"event_type": "im.message.receive_v1", "token": "lark-vt"},
        "event": {
            "sender": {"sender_id": {"user_id": "u_1"}},
            "message": {
                "message_id": "m2",
                "chat_id": "oc_2",
                "message_type": "text",
                "content": json.dumps({"text": "secret hello"}),
            },
        },
    }
    body, headers = sealed(event, sign_key="wrong")
    r = await client.post("/webhooks/lark", content=body, headers=headers)
    assert (r.status_code, r.json()) == (401, {"error": "invalid signature"})
    body, headers = sealed(event)
    assert (await client.post("/webhooks/lark", content=body, headers=headers)).json() == {
        "status": "accepted"
    }
    posted = await wait_for(
        lambda: _async(fake.of("/lark/open-apis/bot/v2/hook/xyz")), "reply at the Lark fake"
    )
    assert posted[0] == {"msg_type": "text", "content": {"text": "echo: secret hello"}}


async def _async(value: Any) -> Any:
    return value


async def _settle(client: httpx.AsyncClient) -> None:

    from workspace_server.channels.state import INBOUND_GROUP

    await ctx_of(client).tasks.wait(INBOUND_GROUP)


async def test_cron_runs_get_slack_context_and_post_their_reply(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    """Scheduler hooks: the Slack channel's recent messages prepended to the prompt, the reply posted."""
    from datetime import UTC, datetime, timedelta

    from tests.integration.test_schedules_routes import set_schedule
    from workspace_server.schedules.scheduler import Scheduler

    config = {"bot_token": "xoxb-0000-token", "channel_id": "C42"}
    client, ws, _ = await _setup(client_factory, fake, agent, {"channel_type": "slack", "config": config})
    r = await client.post(
        f"/workspaces/{ws}/schedules", json={"name": "daily", "cron_expr": "0 * * * *", "prompt": "report"}
    )
    sid = r.json()["id"]
    await set_schedule(ctx_of(client), sid, next_run_at=datetime.now(UTC) - timedelta(seconds=5))
    assert await Scheduler(ctx_of(client), busy_wait=0.6, busy_recheck=0.1).tick() == [sid]
    text = agent.received[0]["params"]["message"]["parts"][0]["text"]
    assert text == (
        "[Slack channel context — recent team messages]\n"
        f"- U1: {'x' * 200}\n- Deploy Bot: deployed v2\n- U2: ship it\nreport"
    )
    (posted,) = fake.of("chat.postMessage")
    assert posted["text"].startswith("echo: [Slack channel context") and len(posted["text"]) <= 500


async def test_agent_errors_are_reported_and_undelivered_calls_are_not(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"bot_token": TELEGRAM_TOKEN, "chat_id": "77", "webhook_secret": "tg-secret-value"}
    client, _, _ = await _setup(client_factory, fake, agent, {"channel_type": "telegram", "config": config})
    headers = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-value"}
    agent.mode, agent.status, agent.body = "status", 500, b'{"error":"boom"}'
    assert (
        await client.post("/webhooks/telegram", json=tg_update(1, 77, "a"), headers=headers)
    ).status_code == 200
    sent = await wait_for(lambda: _async(fake.of("sendMessage")), "the agent's error reported")
    assert sent[0]["text"] == "Error: agent returned HTTP 500"
    # the proxy answering for the agent (unreachable, offline): nothing is posted
    from workspace_server.a2a.proxy import Outcome, ProxyResult
    from workspace_server.channels import inbound

    async def unreachable(*_: Any, **__: Any) -> ProxyResult:
        return ProxyResult(
            502, error={"error": "failed to reach workspace agent"}, outcome=Outcome.NOT_DELIVERED
        )

    monkeypatch.setattr(inbound, "proxy_a2a", unreachable)
    assert (
        await client.post("/webhooks/telegram", json=tg_update(2, 77, "b"), headers=headers)
    ).status_code == 200
    await _settle(client)
    assert len(fake.of("sendMessage")) == 1


async def test_spent_budget_drops_inbound_messages(
    client_factory: ClientFactory, fake: FakeProviders, agent: StubAgent
) -> None:
    config = {"bot_token": TELEGRAM_TOKEN, "chat_id": "77", "webhook_secret": "tg-secret-value"}
    channel = {"channel_type": "telegram", "config": config, "channel_budget": 0}
    client, _, _ = await _setup(client_factory, fake, agent, channel)
    headers = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-value"}
    r = await client.post("/webhooks/telegram", json=tg_update(1, 77, "a"), headers=headers)
    assert r.json() == {"status": "accepted"}
    await _settle(client)
    assert agent.received == [] and fake.of("sendMessage") == []
