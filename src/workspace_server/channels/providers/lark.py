"""Lark / Feishu: custom-bot webhook sends, and event callbacks verified by the row's verification token
(constant time) and, with an encrypt key, by `X-Lark-Signature` then decrypted with `lark-oapi`'s
AESCipher. The custom-bot webhook has no client in `lark-oapi` (its API clients need an app id and
secret), so sends are one JSON POST on the shared egress-guarded httpx client."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import httpx

from workspace_server.channels.adapters import LARK_HOOK_PREFIXES
from workspace_server.channels.model import Inbound, SendError, obj, s
from workspace_server.channels.providers import rebase
from workspace_server.config import Settings


async def send(settings: Settings, http: httpx.AsyncClient, config: Mapping[str, str], text: str) -> None:
    hook = config.get("webhook_url", "").strip()
    if hook.startswith(LARK_HOOK_PREFIXES[0]):  # open.feishu.cn; else open.larksuite.com
        url = rebase(hook, "https://open.feishu.cn/", settings.LARK_FEISHU_BASE_URL)
    else:
        url = rebase(hook, "https://open.larksuite.com/", settings.LARK_LARKSUITE_BASE_URL)
    try:
        r = await http.post(url, json={"msg_type": "text", "content": {"text": text}}, timeout=10)
    except httpx.HTTPError:
        raise SendError("lark: request failed") from None
    if r.status_code != 200:
        raise SendError(f"lark: HTTP {r.status_code}")
    try:
        code = r.json().get("code", 0)
    except (ValueError, AttributeError):
        code = 0
    if code not in (0, None):
        raise SendError(f"lark: code {code}")


def signature_ok(encrypt_key: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Lark's `X-Lark-Signature`: hex sha256 of timestamp + nonce + encrypt key + body."""
    ts, nonce = headers.get("x-lark-request-timestamp", ""), headers.get("x-lark-request-nonce", "")
    want = hashlib.sha256(ts.encode() + nonce.encode() + encrypt_key.encode() + body).hexdigest()
    return hmac.compare_digest(want.encode(), headers.get("x-lark-signature", "").encode(errors="replace"))


def decrypt(encrypt_key: str, data: dict[str, Any]) -> dict[str, Any] | None:
    from lark_oapi.core.utils.decryptor import AESCipher  # lark-oapi's import is slow: only when needed

    try:
        plain = json.loads(AESCipher(encrypt_key).decrypt_str(s(data.get("encrypt"))))
    except (ValueError, UnicodeDecodeError):
        return None
    return plain if isinstance(plain, dict) else None


def token_of(data: dict[str, Any]) -> str:
    header = obj(data, "header")
    return s(header.get("token")) or s(data.get("token"))


def token_ok(config: Mapping[str, str], data: dict[str, Any]) -> bool:
    want = config.get("verify_token", "")
    return bool(want) and hmac.compare_digest(want.encode(), token_of(data).encode(errors="replace"))


def parse(data: dict[str, Any]) -> Inbound | None:
    """Only `im.message.receive_v1` with `message_type: text`; user = `user_id` else `open_id`."""
    header = obj(data, "header")
    if header.get("event_type") != "im.message.receive_v1":
        return None
    event = obj(data, "event")
    msg = obj(event, "message")
    if msg.get("message_type") != "text":
        return None
    try:
        content = json.loads(s(msg.get("content")))
    except ValueError:
        return None
    text = s(content.get("text")) if isinstance(content, dict) else ""
    sender = obj(event, "sender")
    ids = obj(sender, "sender_id")
    user = s(ids.get("user_id")) or s(ids.get("open_id"))
    if not text:
        return None
    return Inbound(s(msg.get("chat_id")), user, user, text, s(msg.get("message_id")))
