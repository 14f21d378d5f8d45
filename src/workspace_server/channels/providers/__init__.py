"""One module per provider: its SDK client built on the egress policy, its sends, its inbound parsing.

Every base URL is a Settings value (so tests point the SDK at a local fake); a configured webhook URL is
re-rooted on that base (its path kept), so the server never dials a host the adapter did not name.
"""

from __future__ import annotations

from workspace_server.channels.model import SendError


def rebase(url: str, prefix: str, base: str) -> str:
    """`url` (validated to start with `prefix`) with `prefix` replaced by the configured `base`."""
    if not url.startswith(prefix):
        raise SendError("webhook_url is not the provider's")
    return base.rstrip("/") + "/" + url[len(prefix) :].lstrip("/")
