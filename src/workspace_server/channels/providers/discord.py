"""Discord: interactions verified with Ed25519 (PyNaCl), replies as interaction follow-ups, sends through
the channel's webhook. REST on the shared egress-guarded httpx client: the maintained Python clients
(discord.py and forks) are gateway bot frameworks whose REST base is a module constant, not a setting,
and two JSON POSTs do not justify one (docs/decisions.md "Channels")."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from workspace_server.channels.adapters import DISCORD_HOOK_PREFIX
from workspace_server.channels.model import Inbound, SendError, chunks, obj, s
from workspace_server.channels.providers import rebase
from workspace_server.config import Settings

CHUNK = 2000
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,1024}")  # an interaction token goes into a URL path
FRESH_SECONDS = 300


def verify(public_key_hex: str, body: bytes, headers: Mapping[str, str], now: float | None = None) -> bool:
    sig, ts = headers.get("x-signature-ed25519", ""), headers.get("x-signature-timestamp", "")
    if not public_key_hex or not sig or not ts.isdigit() or len(ts) > 12:
        return False
    if abs((now or time.time()) - int(ts)) > FRESH_SECONDS:  # a replayed delivery
        return False
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(ts.encode() + body, bytes.fromhex(sig))
    except (ValueError, BadSignatureError):
        return False
    return True


def parse(data: dict[str, Any]) -> Inbound | None:
    """Type 2 (command) / 3 (component) → `/name opt…`; the user from `member.user`, else `user`."""
    if data.get("type") not in (2, 3):
        return None
    d = obj(data, "data")
    parts = ["/" + s(d.get("name") or d.get("custom_id"))]
    for opt in d.get("options") or []:
        if isinstance(opt, dict):
            parts.append(s(opt.get("value")))
    member = obj(data, "member")
    user = obj(member, "user") or obj(data, "user")
    extra = {"interaction_token": s(data.get("token")), "application_id": s(data.get("application_id"))}
    text = " ".join(p for p in parts if p)
    chat = s(data.get("channel_id"))
    return Inbound(chat, s(user.get("id")), s(user.get("username")), text, s(data.get("id")), extra)


async def _post(http: httpx.AsyncClient, url: str, text: str) -> None:
    for piece in chunks(text, CHUNK):
        try:
            r = await http.post(url, json={"content": piece}, timeout=10)
        except httpx.HTTPError:
            raise SendError("discord: request failed") from None  # never the URL: it holds the token
        if r.status_code not in (200, 204):
            raise SendError(f"discord: HTTP {r.status_code}")


async def send(settings: Settings, http: httpx.AsyncClient, config: Mapping[str, str], text: str) -> None:
    url = rebase(
        config.get("webhook_url", "").strip(),
        DISCORD_HOOK_PREFIX,
        settings.DISCORD_API_BASE_URL + "/webhooks/",
    )
    await _post(http, url, text)


async def follow_up(settings: Settings, http: httpx.AsyncClient, msg: Inbound, text: str) -> bool:
    """The reply to a deferred interaction (the `{"type":5}` we answered); False when it has no token."""
    app, token = msg.extra.get("application_id", ""), msg.extra.get("interaction_token", "")
    if not app.isascii() or not app.isdigit() or len(app) > 32 or not _TOKEN.fullmatch(token):
        return False
    await _post(http, f"{settings.DISCORD_API_BASE_URL}/webhooks/{app}/{token}", text)
    return True
