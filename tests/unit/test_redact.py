"""Secret redaction before a memory is stored (spec 05 §2 step 1)."""

from __future__ import annotations

import pytest

from workspace_server.memories.redact import redact_secrets


@pytest.mark.parametrize(
    ("raw", "clean", "labels"),
    [
        ("OPENAI_API_KEY=sk-abcdef1234567890abcdef", "[REDACTED:API_KEY]", ["API_KEY"]),
        ("set anthropic_api_key = xyz then go", "set [REDACTED:API_KEY] then go", ["API_KEY"]),
        ("GITHUB_TOKEN=ghp_123 and more", "[REDACTED:TOKEN] and more", ["TOKEN"]),
        ("WEBHOOK_SECRET=abc", "[REDACTED:SECRET]", ["SECRET"]),
        ("Authorization: Bearer abc.def-ghi", "Authorization: [REDACTED:BEARER_TOKEN]", ["BEARER_TOKEN"]),
        ("bearer lowercase stays", "bearer lowercase stays", []),
        ("key sk-ABCDEFGHIJ_klmnop-1 end", "key [REDACTED:SK_TOKEN] end", ["SK_TOKEN"]),
        ("short sk-abc is fine", "short sk-abc is fine", []),
        ("ctx7_AbC123 token", "[REDACTED:CTX7_TOKEN] token", ["CTX7_TOKEN"]),
        ("blob " + "A" * 33 + "==", "blob [REDACTED:BASE64_BLOB]", ["BASE64_BLOB"]),
        ("word " + "a" * 32, "word " + "a" * 32, []),
        ("API_KEY=x", "API_KEY=x", []),  # needs a prefix before _API_KEY
        ("MY_TOKEN=a OTHER_API_KEY=b", "[REDACTED:TOKEN] [REDACTED:API_KEY]", ["API_KEY", "TOKEN"]),
        ("nothing secret here", "nothing secret here", []),
        ("ÉCOLE_API_KEY=x", "É[REDACTED:API_KEY]", ["API_KEY"]),  # ASCII \b as in RE2: É is no word char
    ],
)
def test_patterns(raw: str, clean: str, labels: list[str]) -> None:
    assert redact_secrets(raw) == (clean, labels)


def test_most_specific_first() -> None:
    # the env assignment is taken whole; the sk- pattern never sees half of it
    out, labels = redact_secrets("OPENAI_API_KEY=sk-proj-" + "x" * 40)
    assert out == "[REDACTED:API_KEY]" and labels == ["API_KEY"]
