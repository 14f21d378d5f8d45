"""One module per provider: its SDK client built on the egress policy, its sends, its inbound parsing.

Every base URL is a Settings value (so tests point the SDK at a local fake); a configured webhook URL is
re-rooted on that base (its path kept), so the server never dials a host the adapter did not name.
"""

from __future__ import annotations

import re

from workspace_server.channels.model import SendError

_PATH = re.compile(r"^[A-Za-z0-9_\-./]*$")  # a webhook path: no query, fragment, escapes or dot segments


def rebase(url: str, prefix: str, base: str) -> str:
    """`url` (validated to start with `prefix`) with `prefix` replaced by the configured `base`."""
    rest = url[len(prefix) :].lstrip("/")
    if not url.startswith(prefix) or not _PATH.match(rest) or ".." in rest:
        raise SendError("webhook_url is not the provider's")
    return base.rstrip("/") + "/" + rest
