"""The four adapters' config schemas (`GET /channels/adapters`), validation and masks (spec 06 §3.6).

Beyond the reference (docs/decisions.md "Channels"): Slack gains `signing_secret` (its Events API
webhook is verified), Telegram `webhook_secret` (required for `POST /webhooks/telegram`), Lark
`encrypt_key`; every field marked sensitive is encrypted at rest and masked when listed, `webhook_url`
included (its path is the credential).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SLACK_HOOK_PREFIX = "https://hooks.slack.com/"
DISCORD_HOOK_PREFIX = "https://discord.com/api/webhooks/"
LARK_HOOK_PREFIXES = (
    "https://open.feishu.cn/open-apis/bot/v2/hook/",
    "https://open.larksuite.com/open-apis/bot/v2/hook/",
)
TELEGRAM_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{30,}$")
MAX_VALUE_CHARS = 2048  # any one config value; keeps the row and every log line bounded
MAX_CONFIG_KEYS = 32


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    type: str = "text"
    required: bool = False
    sensitive: bool = False
    placeholder: str = ""
    help: str = ""

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "label": self.label,
            "type": self.type,
            "required": self.required,
            "sensitive": self.sensitive,
        }
        if self.placeholder:
            out["placeholder"] = self.placeholder
        if self.help:
            out["help"] = self.help
        return out


@dataclass(frozen=True)
class Adapter:
    type: str
    display_name: str
    fields: tuple[Field, ...]

    @property
    def secret_keys(self) -> frozenset[str]:
        return frozenset(f.key for f in self.fields if f.sensitive)

    def render(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "display_name": self.display_name,
            "config_schema": [f.render() for f in self.fields],
        }


ADAPTERS: dict[str, Adapter] = {
    "slack": Adapter(
        "slack",
        "Slack",
        (
            Field("bot_token", "Bot Token", "password", sensitive=True, placeholder="xoxb-..."),
            Field("channel_id", "Channel ID", placeholder="C0123456789", help="Required with a bot token"),
            Field(
                "webhook_url",
                "Incoming Webhook URL",
                "password",
                sensitive=True,
                placeholder=SLACK_HOOK_PREFIX,
            ),
            Field(
                "signing_secret",
                "Signing Secret",
                "password",
                sensitive=True,
                help="Verifies Events API posts",
            ),
            Field("username", "Display Name"),
            Field("icon_emoji", "Icon Emoji", placeholder=":robot_face:"),
        ),
    ),
    "discord": Adapter(
        "discord",
        "Discord",
        (
            Field("webhook_url", "Webhook URL", "password", True, True, DISCORD_HOOK_PREFIX),
            Field("public_key", "Application Public Key", help="Verifies interactions (Ed25519, hex)"),
        ),
    ),
    "telegram": Adapter(
        "telegram",
        "Telegram",
        (
            Field("bot_token", "Bot Token", "password", True, True, "123456:ABC-DEF..."),
            Field("chat_id", "Chat IDs", required=True, help="Comma-separated; use Detect Chats"),
            Field(
                "webhook_secret", "Webhook Secret", "password", sensitive=True, help="Required for webhooks"
            ),
        ),
    ),
    "lark": Adapter(
        "lark",
        "Lark / Feishu",
        (
            Field("webhook_url", "Webhook URL", "password", True, True, LARK_HOOK_PREFIXES[0]),
            Field("verify_token", "Verification Token", "password", sensitive=True),
            Field("encrypt_key", "Encrypt Key", "password", sensitive=True),
        ),
    ),
}


def list_adapters() -> list[dict[str, Any]]:
    return [a.render() for a in sorted(ADAPTERS.values(), key=lambda a: a.display_name)]


class InvalidConfig(ValueError):
    """The adapter's reason; the routes answer the spec's fixed `invalid channel config`."""


def _s(config: dict[str, str], key: str) -> str:
    return config.get(key, "").strip()


def normalise(raw: Any) -> dict[str, str]:
    """A config object of string values (bounded); anything else is invalid."""
    if not isinstance(raw, dict) or len(raw) > MAX_CONFIG_KEYS:
        raise InvalidConfig("config must be an object of strings")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > 64 or len(v) > MAX_VALUE_CHARS:
            raise InvalidConfig("config values must be short strings")
        out[k] = v
    return out


def validate(channel_type: str, config: dict[str, str]) -> None:
    if channel_type == "slack":
        token, hook = _s(config, "bot_token"), _s(config, "webhook_url")
        if not token and not hook:
            raise InvalidConfig("slack needs bot_token or webhook_url")
        if token and not _s(config, "channel_id"):
            raise InvalidConfig("slack bot_token needs channel_id")
        if hook and not hook.startswith(SLACK_HOOK_PREFIX):
            raise InvalidConfig(f"webhook_url must start with {SLACK_HOOK_PREFIX}")
    elif channel_type == "discord":
        if not _s(config, "webhook_url").startswith(DISCORD_HOOK_PREFIX):
            raise InvalidConfig(f"webhook_url must start with {DISCORD_HOOK_PREFIX}")
        key = _s(config, "public_key")
        if key and not re.fullmatch(r"[0-9a-fA-F]{64}", key):
            raise InvalidConfig("public_key must be 64 hex characters")
    elif channel_type == "telegram":
        if not TELEGRAM_TOKEN.match(_s(config, "bot_token")):
            raise InvalidConfig("invalid telegram bot_token")
        if "chat_id" not in config:
            raise InvalidConfig("chat_id is required")
    elif channel_type == "lark":
        if not _s(config, "webhook_url").startswith(LARK_HOOK_PREFIXES):
            raise InvalidConfig("webhook_url must be a Lark / Feishu bot webhook")
    else:
        raise InvalidConfig(f"unsupported channel_type: {channel_type}")


def mask(value: str) -> str:
    """`abcd...wxyz` for a value over 8 characters, else `***` (spec 06 §3.6)."""
    return f"{value[:4]}...{value[-4:]}" if len(value) > 8 else "***"


def masked(channel_type: str, config: dict[str, str]) -> dict[str, str]:
    secret = ADAPTERS[channel_type].secret_keys if channel_type in ADAPTERS else frozenset()
    return {k: (mask(v) if k in secret and v else v) for k, v in config.items()}


def keep_unchanged_secrets(channel_type: str, new: dict[str, str], old: dict[str, str]) -> dict[str, str]:
    """A PATCH that sends back a listed (masked) secret keeps the stored one (the reference overwrote the
    real token with its mask)."""
    secret = ADAPTERS[channel_type].secret_keys if channel_type in ADAPTERS else frozenset()
    out = dict(new)
    for k in secret:
        if k in out and k in old and old[k] and out[k] == mask(old[k]):
            out[k] = old[k]
    return out


def chat_ids(config: dict[str, str]) -> list[str]:
    return [c.strip() for c in config.get("chat_id", "").split(",") if c.strip()]
