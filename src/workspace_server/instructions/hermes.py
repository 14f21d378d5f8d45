"""Chat-message shaping for OpenAI-compatible providers (spec 04 §6, the reference's hermes_messages.go).

Some providers accept exactly one system message at index 0; instructions, the agent's prompt and memory
context arrive as several. This merges the leading run of system messages into one (joined by a blank
line; a non-string content counts as ""). The server has no route for it: runtimes that talk to such
providers share the rule.
"""

from __future__ import annotations

from typing import Any


def merge_leading_system_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    end = 0
    while end < len(messages) and messages[end].get("role") == "system":
        end += 1
    if end <= 1:
        return messages
    parts = [m["content"] if isinstance(m.get("content"), str) else "" for m in messages[:end]]
    return [{"role": "system", "content": "\n\n".join(parts)}, *messages[end:]]
