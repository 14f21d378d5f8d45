"""Org import's `channels:` block (spec 06 §3.5 step 8, issue 13 §2): applied through the channels service.

`$VAR`s come from the org and node `.env`; what cannot be applied is a skip record with the spec's reason;
what can is stored encrypted (the reference stored it in clear) and listed masked like any channel.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.integration.channels_support import TELEGRAM_TOKEN
from tests.integration.test_org_import import (  # fixtures and helpers, no tests
    AUTH,
    api,
    do_import,
    org_root,
    rows,
    write_org,
)
from workspace_server.db.schema import workspace_channels

__all__ = ["api", "org_root"]  # pytest fixtures, used by name

CHANNELS = [
    {"type": "telegram", "config": {"bot_token": "${TG_TOKEN}", "chat_id": "$TG_CHAT"}},
    {"type": "telegram", "config": {"bot_token": "${TG_TOKEN}", "chat_id": "99"}},  # upserts the first
    {"type": "slack", "config": {"bot_token": "xoxb-x"}},  # no channel_id: the service's own 400
    {"type": "irc", "config": {}},
    {"type": " ", "config": {}},
    {"type": "discord", "config": {"webhook_url": "${NOPE}${EMPTY}"}},
]


async def test_channels_applied_encrypted_and_skips_reported(api: httpx.AsyncClient, org_root: Path) -> None:
    doc = {"name": "Chatty", "workspaces": [{"name": "Bot", "runtime": "echo", "channels": CHANNELS}]}
    org = write_org(org_root, "chatty", doc)
    (org / ".env").write_text(f"TG_TOKEN={TELEGRAM_TOKEN}\nTG_CHAT=7\nEMPTY=\n", encoding="utf-8")

    r = await do_import(api, {"dir": "chatty", "force": True})
    assert r.status_code == 201, r.text
    (bot,) = r.json()["workspaces"]
    assert bot["channels"] == ["telegram", "telegram"]
    assert bot["channels_skipped"] == [
        {"reason": "invalid channel config", "type": "slack", "workspace": "Bot"},
        {"reason": "unknown adapter", "type": "irc", "workspace": "Bot"},
        {"reason": "empty type", "type": " ", "workspace": "Bot"},
        {"reason": "missing env: [NOPE EMPTY]", "type": "discord", "workspace": "Bot"},
    ]

    (stored,) = await rows(
        api, sa.select(workspace_channels.c.channel_config, workspace_channels.c.channel_type)
    )
    assert stored.channel_type == "telegram"
    assert stored.channel_config["bot_token"].startswith("ec1:") and TELEGRAM_TOKEN not in str(stored)

    listed = await api.get(f"/workspaces/{bot['id']}/channels", headers=AUTH)
    assert listed.status_code == 200
    (view,) = listed.json()
    assert view["config"]["chat_id"] == "99"  # the second entry of the type updated the first
    assert view["config"]["bot_token"] == TELEGRAM_TOKEN[:4] + "..." + TELEGRAM_TOKEN[-4:]
