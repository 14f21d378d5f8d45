"""One module per provider: its SDK client built on the egress policy, its sends, its inbound parsing.

Every base URL is a Settings value (so tests point the SDK at a local fake); a configured webhook URL is
re-rooted on that base (its path kept), so the server never dials a host the adapter did not name.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from workspace_server.channels.model import SendError

_PATH = re.compile(r"^[A-Za-z0-9_\-./]*$")  # a webhook path: no query, fragment, escapes or dot segments


def rebase(url: str, prefix: str, base: str) -> str:
    """`url` (validated to start with `prefix`) with `prefix` replaced by the configured `base`."""
    rest = url[len(prefix) :].lstrip("/")
    if not url.startswith(prefix) or not _PATH.match(rest) or ".." in rest:
        raise SendError("webhook_url is not the provider's")
    return base.rstrip("/") + "/" + rest


# Credentials that live in provider URL paths: a Telegram bot token, a Discord webhook or interaction token,
# a Slack or Lark hook id. httpx logs every request URL at INFO (the server logs INFO), so without this a
# poller would write its bot token to the log every 30 s.
_SECRET_PATHS = (
    (re.compile(r"/bot\d+:[A-Za-z0-9_-]+"), "/bot<redacted>"),
    (re.compile(r"/webhooks/[^/\s\"']+/[^/\s\"'?]+"), "/webhooks/<redacted>"),
    (re.compile(r"/hook/[^/\s\"'?]+"), "/hook/<redacted>"),
    (re.compile(r"/services/[^\s\"'?]+"), "/services/<redacted>"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATHS:
        text = pattern.sub(replacement, text)
    return text


class RedactProviderSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, int | float) or arg is None:
        return arg  # %d / %s of a number stays a number
    text = str(arg)
    cleaned = redact(text)
    return arg if cleaned == text else cleaned


_FILTER = RedactProviderSecrets()
for _name in ("httpx", "httpcore", "telegram", "slack_sdk", "aiohttp.client"):
    _logger = logging.getLogger(_name)
    if _FILTER not in _logger.filters:
        _logger.addFilter(_FILTER)
