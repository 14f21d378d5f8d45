"""What a request body may hold (jsonnum.decode_document) and how stored JSON reads back (loads_stored)."""

from __future__ import annotations

import pytest

from workspace_server.common.jsonnum import MAX_JSON_DEPTH, UnsafeJSON, decode_document, loads_stored


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "\\ud800"}',
        b'{"\\udfff": 1}',
        b'["x\xed\xa0\x80"]',  # the raw UTF-8 bytes of an encoded surrogate
        b'{"a": "\\u0000"}',
        b'{"a": 1e400}',
        b'{"a": -1e400}',
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
        b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_unkeepable_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(UnsafeJSON):
        decode_document(raw)


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b'{"a": ', b"\xff", b"1" * 5000])
def test_malformed_bodies_are_value_errors(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_document(raw)


def test_what_may_pass() -> None:
    deep = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert decode_document(deep) is not None
    assert decode_document(b'{"a": "\\ud83d\\ude00 \\u00e9", "b": 1.5e300}') == {
        "a": "\U0001f600 é",
        "b": 1.5e300,
    }
    assert decode_document(b'{"a": "\\u0000"}', allow_nul=True) == {"a": "\x00"}
    assert decode_document(b'["\\ud800"]', check_strings=False) == ["\ud800"]  # the caller judges strings
    # many brackets, little depth: walked, and accepted
    assert len(decode_document(b"[" + b"[1]," * 1000 + b"[]]")) == 1001


def test_stored_documents_are_repaired_on_read() -> None:
    assert loads_stored('{"a": "\\ud800x", "\\udc00": [NaN, Infinity, -Infinity, 1e400, 2.5]}') == {
        "a": "\ufffdx",
        "\ufffd": [None, None, None, None, 2.5],
    }
    assert loads_stored('{"n": 1' + "0" * 5000 + ', "m": 7}') == {"n": None, "m": 7}
    assert loads_stored('{"ok": "\\ud83d\\ude00"}') == {"ok": "\U0001f600"}  # a valid pair is kept
    assert loads_stored(b'{"b": 1}') == {"b": 1}
    assert loads_stored("not json") is None
