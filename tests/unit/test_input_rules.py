"""What a request body may hold (jsonnum.decode_document) and how stored JSON reads back (loads_stored)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workspace_server.common.jsonnum import (
    MAX_JSON_DEPTH,
    UnsafeJSON,
    decode_document,
    dumps_compact,
    loads_finite,
    loads_reply,
    loads_stored,
)


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


# ---- the orjson fast paths give what `json` gives, or leave the document to it ----

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(value=_JSON, spaced=st.booleans())
def test_fast_paths_agree_with_json(value: object, spaced: bool) -> None:
    raw = json.dumps(value, ensure_ascii=spaced, separators=None if spaced else (",", ":")).encode()
    assert loads_reply(raw) == json.loads(raw)
    try:
        parsed = decode_document(raw, check_strings=False)
    except ValueError:
        with pytest.raises(ValueError):
            loads_finite(raw)  # the stdlib's own verdict
    else:
        assert parsed == json.loads(raw)
    try:
        encoded = dumps_compact(value)
    except UnicodeEncodeError:  # a lone surrogate: refused as json's own `.encode()` refuses it
        with pytest.raises(UnicodeEncodeError):
            json.dumps(value, ensure_ascii=False).encode()
        return
    assert json.loads(encoded) == value


def test_what_orjson_refuses_or_would_change_takes_json_s_path() -> None:
    assert loads_reply(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
    assert loads_reply(b'{"x": NaN}')["x"] != loads_reply(b'{"x": NaN}')["x"]  # NaN, as json reads it
    assert loads_reply(b'["\\ud800"]') == ["\ud800"]
    assert decode_document(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
    assert dumps_compact({"n": 2**70, "s": "é"}) == '{"n":1180591620717411303424,"s":"é"}'.encode()
    assert dumps_compact({"a": [1, 2.5, None, True]}) == b'{"a":[1,2.5,null,true]}'
    with pytest.raises(ValueError):
        loads_reply(b"{")


@settings(max_examples=500, deadline=None)
@given(
    raw=st.binary(max_size=80)
    | st.lists(st.sampled_from([b"1", b"90", b"a", b" ", b"\xff", b"-"]), max_size=60).map(b"".join)
)
def test_long_number_check_finds_what_the_pattern_finds(raw: bytes) -> None:
    """A document is left to `json` when it holds a run of 19 digits (orjson reads an integer past 64 bits
    as a float): the translate-and-find check answers as `[0-9]{19}` does."""
    from workspace_server.common.jsonnum import _has_long_number

    assert _has_long_number(raw) == (re.search(rb"[0-9]{19}", raw) is not None)
    assert _has_long_number(raw + b"1" * 19)
