"""What a provider hands the inbound pipeline, and the text helpers every provider shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_INBOUND_TEXT = 16_000  # characters of one inbound message forwarded to the agent


class SendError(Exception):
    """A provider refused or failed a send. Its text never holds a credential or a webhook URL."""


@dataclass
class Inbound:
    chat_id: str
    user_id: str
    username: str
    text: str
    message_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def chunks(text: str, limit: int, seps: tuple[str, ...] = ("\n\n", "\n", " ")) -> list[str]:
    """`text` in pieces of at most `limit` characters, each cut at the last separator in its back half
    (paragraph, then line, then space), else hard."""
    out: list[str] = []
    while len(text) > limit:
        cut = -1
        for sep in seps:
            at = text.rfind(sep, limit // 2, limit)
            if at > 0:
                cut = at
                break
        if cut <= 0:
            cut = limit
        out.append(text[:cut])
        text = text[cut:].lstrip("\n ") if cut < limit else text[cut:]
    if text or not out:
        out.append(text)
    return out


def s(value: Any) -> str:
    """A provider field as text ("" for absent or non-scalar)."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return ""
    return str(value)


@dataclass
class Channel:
    """A `workspace_channels` row with its config decrypted."""

    id: str
    workspace_id: str
    channel_type: str
    config: dict[str, str]
    enabled: bool = True
    allowed_users: list[str] = field(default_factory=list)


def obj(data: Any, key: str) -> dict[str, Any]:
    """`data[key]` when both are objects, else {} (provider payloads are untrusted shapes)."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def field_str(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
