"""Secret scrubbing before a memory is stored (spec 05 §2 step 1, SAFE-T1201).

Patterns run in order, most specific first, so `OPENAI_API_KEY=sk-…` is caught as one assignment before
the generic `sk-…` or base64 patterns could take only part of it. Each match becomes `[REDACTED:<LABEL>]`.
`re.ASCII` keeps `\\b`, `\\s` and `\\S` to the ASCII classes of Go's RE2, which the reference used.
"""

from __future__ import annotations

import re
from typing import Final

_FLAGS: Final = re.ASCII
PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"\b[A-Z][A-Z0-9_]*_API_KEY\s*=\s*\S+", _FLAGS | re.IGNORECASE), "API_KEY"),
    (re.compile(r"\b[A-Z][A-Z0-9_]*_TOKEN\s*=\s*\S+", _FLAGS | re.IGNORECASE), "TOKEN"),
    (re.compile(r"\b[A-Z][A-Z0-9_]*_SECRET\s*=\s*\S+", _FLAGS | re.IGNORECASE), "SECRET"),
    (re.compile(r"Bearer\s+\S+", _FLAGS), "BEARER_TOKEN"),
    (re.compile(r"sk-[A-Za-z0-9_-]{16,}", _FLAGS), "SK_TOKEN"),
    (re.compile(r"ctx7_[A-Za-z0-9]+", _FLAGS), "CTX7_TOKEN"),
    (re.compile(r"[A-Za-z0-9+/]{33,}={0,2}", _FLAGS), "BASE64_BLOB"),
)


def redact_secrets(content: str) -> tuple[str, list[str]]:
    """`content` with every known secret pattern replaced, and the labels that fired (for logging)."""
    fired: list[str] = []
    for pattern, label in PATTERNS:
        replaced = pattern.sub(f"[REDACTED:{label}]", content)
        if replaced != content:
            fired.append(label)
            content = replaced
    return content, fired
