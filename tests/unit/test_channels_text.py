"""Channel text helpers: chunking, Slack mrkdwn, `[slug]` routing, masks, config validation, signatures."""

from __future__ import annotations

import time

import pytest
from nacl.signing import SigningKey

from workspace_server.channels import adapters
from workspace_server.channels.model import SendError, chunks
from workspace_server.channels.providers import discord, rebase, slack, telegram
from workspace_server.channels.webhook import split_slug


def test_chunks_cut_at_paragraph_line_space_then_hard() -> None:
    assert chunks("short", 10) == ["short"]
    assert chunks("", 10) == [""]
    text = "a" * 6 + "\n\n" + "b" * 6
    assert chunks(text, 10) == ["aaaaaa", "bbbbbb"]
    assert chunks("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    pieces = chunks(("word " * 1000).strip(), 2000)
    assert all(len(p) <= 2000 for p in pieces) and " ".join(pieces).split() == ["word"] * 1000


def test_slack_mrkdwn() -> None:
    md = "# Title\n**bold** and ~~gone~~ [link](https://x.y)\n---\n| a | bb |\n|---|---|\n| 1 | 2 |"
    assert (
        slack.to_mrkdwn(md)
        == "*Title*\n*bold* and ~gone~ <https://x.y|link>\n----------\n```\na  bb\n1  2\n```"
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("[echo] hi", ("echo", "hi")),
        ("[Echo Bot]   hi there", ("echo bot", "hi there")),
        ("[echo]", ("echo", "[echo]")),
        ("[x] hi", ("x", "hi")),
        ("[] hi", ("", "[] hi")),  # `]` at index 2 at the earliest
        ("[bad!] hi", ("", "[bad!] hi")),
        ("no slug", ("", "no slug")),
    ],
)
def test_split_slug(text: str, want: tuple[str, str]) -> None:
    assert split_slug(text) == want


def test_masks_and_kept_secrets() -> None:
    assert adapters.mask("abcdefghijkl") == "abcd...ijkl"
    assert adapters.mask("short") == "***"
    cfg = {"bot_token": "xoxb-123456789", "channel_id": "C1"}
    listed = adapters.masked("slack", cfg)
    assert listed == {"bot_token": "xoxb...6789", "channel_id": "C1"}
    assert adapters.keep_unchanged_secrets("slack", listed, cfg) == cfg
    assert (
        adapters.keep_unchanged_secrets("slack", {"bot_token": "new-token-123"}, cfg)["bot_token"]
        == "new-token-123"
    )


def test_validation() -> None:
    adapters.validate("telegram", {"bot_token": "1:" + "a" * 30, "chat_id": ""})
    for t, cfg in [
        ("telegram", {"bot_token": "1:" + "a" * 30}),
        ("slack", {}),
        ("discord", {"webhook_url": adapters.DISCORD_HOOK_PREFIX + "1/t", "public_key": "zz"}),
        ("lark", {"webhook_url": "https://open.feishu.cn/other"}),
    ]:
        with pytest.raises(adapters.InvalidConfig):
            adapters.validate(t, cfg)
    with pytest.raises(adapters.InvalidConfig):
        adapters.normalise({"k": 1})
    with pytest.raises(adapters.InvalidConfig):
        adapters.normalise({"k": "v" * (adapters.MAX_VALUE_CHARS + 1)})


def test_rebase_confines_the_path() -> None:
    assert rebase("https://hooks.slack.com/services/T/B/x", "https://hooks.slack.com/", "http://f/h/") == (
        "http://f/h/services/T/B/x"
    )
    for bad in ("https://hooks.slack.com/../x", "https://hooks.slack.com/a?b", "https://evil/x"):
        with pytest.raises(SendError):
            rebase(bad, "https://hooks.slack.com/", "http://f/")


def test_discord_signature_window() -> None:
    key = SigningKey.generate()
    pub = key.verify_key.encode().hex()
    now = int(time.time())
    body = b'{"type":1}'

    def headers(ts: int, k: SigningKey = key) -> dict[str, str]:
        sig = k.sign(str(ts).encode() + body).signature.hex()
        return {"x-signature-ed25519": sig, "x-signature-timestamp": str(ts)}

    assert discord.verify(pub, body, headers(now))
    assert not discord.verify(pub, body, headers(now - 3600))
    assert not discord.verify(pub, body, headers(now, SigningKey.generate()))
    assert not discord.verify(pub, body + b" ", headers(now))
    assert not discord.verify(pub, body, {"x-signature-ed25519": "zz", "x-signature-timestamp": str(now)})


def test_slack_verify_refuses_malformed_headers() -> None:
    assert not slack.verify(
        "secret", b"{}", {"x-slack-request-timestamp": "abc", "x-slack-signature": "v0=1"}
    )
    assert not slack.verify("", b"{}", {})


def test_telegram_local_commands_and_secret() -> None:
    assert telegram.local_command("/start@my_bot") == "start"
    assert telegram.local_command("/ask x") is None
    assert telegram.secret_matches({"webhook_secret": "s"}, "s")
    assert not telegram.secret_matches({}, "")


def test_provider_secrets_redacted_from_http_logs(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import httpx

    import workspace_server.channels.providers  # noqa: F401  (installs the filter)

    token = "123456:" + "A" * 35
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s %d %s"',
            "POST",
            httpx.URL(f"https://api.telegram.org/bot{token}/getUpdates"),
            "HTTP/1.1",
            200,
            "OK",
        )
        logging.getLogger("httpx").info(
            "POST https://discord.com/api/webhooks/1/tok-en_1 and /open-apis/bot/v2/hook/abc"
        )
    text = caplog.text
    assert token not in text and "tok-en_1" not in text and "hook/abc" not in text
    assert "/bot<redacted>/getUpdates" in text and "200 OK" in text


def test_reply_text() -> None:
    from workspace_server.channels.inbound import reply_text

    assert reply_text(500, None) == "Error: agent returned HTTP 500"
    assert reply_text(200, {"result": {"parts": [{"kind": "text", "text": "hi"}]}}) == "hi"
    art = {"result": {"parts": [], "artifacts": [{"parts": [{"kind": "text", "text": "from artifact"}]}]}}
    assert reply_text(200, art) == "from artifact"
    assert reply_text(200, {"result": {"parts": [{"kind": "data"}]}}) is None
    assert reply_text(202, {"queued": True}) is None
