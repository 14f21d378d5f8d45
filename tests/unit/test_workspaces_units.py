"""Pure rules of the workspaces area: number rendering, path confinement, field caps, crypto, templates."""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from pathlib import Path

import pytest

from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id, parse_uuid
from workspace_server.common.jsonnum import (
    contains_nul,
    encodable_json,
    go_float,
    loads_finite,
    loads_strict,
    storable_json,
)
from workspace_server.common.paths import resolve_inside_root
from workspace_server.secrets.crypto import DecryptError, SecretsCrypto, parse_key
from workspace_server.workspaces.schemas import (
    workspace_access_ok,
    workspace_dir_ok,
    workspace_fields_error,
)
from workspace_server.workspaces.service import (
    connection_block,
    parse_budget_limit,
    truncate_utf8,
)
from workspace_server.workspaces.templates import load_provision_timeouts, scan_runtime_and_model


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (1.0, "1"), (2.5, "2.5"), (-3.0, "-3"), (100.0, "100"), (1e21, "1e+21"), (None, "0")],
)
def test_go_float_renders_like_go(value: float | None, text: str) -> None:
    assert json.dumps(go_float(value)) == text


def test_loads_strict_rejects_nan_and_infinity() -> None:
    assert loads_strict('{"a":1.5}') == {"a": 1.5}
    for bad in ('{"a":NaN}', '{"a":Infinity}', "[-Infinity]"):
        with pytest.raises(ValueError):
            loads_strict(bad)
        with pytest.raises(ValueError):
            loads_finite(bad)
    assert loads_strict('{"a":1e400}') == {"a": float("inf")}  # loads_finite (every body) refuses it


def test_loads_finite_rejects_numbers_beyond_float_range() -> None:
    for bad in ('{"a":1e400}', "[-1e999]"):
        with pytest.raises(ValueError):
            loads_finite(bad)
    big = 12345678901234567890123
    assert loads_finite('{"a":1e300,"b":12345678901234567890123}') == {"a": 1e300, "b": big}


def test_storable_json_refuses_what_postgres_cannot_hold() -> None:
    assert storable_json({"a": ["b", {"c": 1.5}], "d": None, "e": True})
    for bad in ({"a": "x\x00"}, {"k\x00": 1}, ["\ud800"], {"a": [{"b": float("inf")}]}, float("nan")):
        assert not storable_json(bad), bad
    assert encodable_json({"a": "x\x00"})  # NUL is fine on the wire, only the database refuses it
    for bad in (["\ud800"], {"a": float("inf")}, float("nan")):
        assert not encodable_json(bad), bad


def test_contains_nul_looks_at_keys_and_nested_values() -> None:
    assert not contains_nul({"a": ["b", {"c": 1}]})
    assert contains_nul({"a": ["b", {"c": "x\x00"}]})
    assert contains_nul({"k\x00": 1})


def test_resolve_inside_root_confines(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "tpl").mkdir(parents=True)
    assert resolve_inside_root(root, "tpl") == root / "tpl"
    assert resolve_inside_root(root, "missing/sub") == root / "missing" / "sub"
    assert resolve_inside_root(root, "tpl/../tpl") == root / "tpl"
    for bad in ("", "/etc", "../x", "tpl/../../x", "a\x00b", "."):
        assert resolve_inside_root(root, bad) is None, bad
    assert resolve_inside_root(root, ".", allow_root=True) == root


def test_resolve_inside_root_refuses_symlink_escape(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    assert resolve_inside_root(root, "link") is None
    assert resolve_inside_root(root, "link/config.yaml") is None


@pytest.mark.parametrize(
    "raw",
    [
        "not-a-uuid",
        "ws-123",
        "123",
        "../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "<script>",
        "",
        "123e4567-e89b-12d3-a456-42661417400",
    ],
)
def test_ids_rejected(raw: str) -> None:
    assert parse_uuid(raw) is None


def test_nil_uuid_accepted_and_ids_lowercased() -> None:
    assert parse_uuid("00000000-0000-0000-0000-000000000000") == "00000000-0000-0000-0000-000000000000"
    assert parse_uuid("123E4567-E89B-12D3-A456-426614174000") == "123e4567-e89b-12d3-a456-426614174000"


def test_new_ids_are_random_canonical_v4_uuids() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for raw in ids:
        parsed = uuid.UUID(raw)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == raw == parse_uuid(raw)
    # every hex digit outside the fixed version/variant nibbles varies
    assert all(len({r[i] for r in ids}) > 8 for i in range(36) if ids[0][i] != "-" and i not in (14, 19))


def test_new_ids_are_distinct_across_threads_and_a_forked_child() -> None:
    """Ids are read from the random source in batches: threads share the batch without a repeat, and a
    forked child does not hand out the ids its parent has in store (it reads its own)."""
    got: list[list[str]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda out=out: out.extend(new_id() for _ in range(5000))) for out in got
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in got for i in out]
    assert len(set(everything)) == len(everything) == 20000
    new_id()  # the batch in store is now part-used: the parent's next ids are decided
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, ",".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 200).decode().split(",")
    os.close(read_end)
    os.close(write_end)
    parent = [new_id() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(parent)


def test_field_limits_at_and_over() -> None:
    assert workspace_fields_error("n" * 255, "r" * 1000, "m" * 100, "x" * 100) is None
    assert workspace_fields_error("n" * 256, "", "", "") == "name must be at most 255 characters"
    assert workspace_fields_error("", "r" * 1001, "", "") == "role must be at most 1000 characters"
    assert workspace_fields_error("", "", "m" * 101, "") == "model must be at most 100 characters"
    assert workspace_fields_error("", "", "", "x" * 101) == "runtime must be at most 100 characters"
    # bytes, as Go's len(): 128 two-byte characters are 256 bytes
    assert workspace_fields_error("é" * 128, "", "", "") == "name must be at most 255 characters"


def test_forbidden_characters() -> None:
    for label, args in (
        ("name", ("a\nb", "", "", "")),
        ("role", ("", "a\rb", "", "")),
        ("model", ("", "", "a\nb", "")),
        ("runtime", ("", "", "", "a\rb")),
    ):
        assert workspace_fields_error(*args) == f"{label} must not contain newline characters"
    for ch in "{}[]|>*&!":
        assert workspace_fields_error(f"a{ch}", "", "", "") == "name contains invalid characters"
        assert workspace_fields_error("", f"a{ch}", "", "") == "role contains invalid characters"
        assert workspace_fields_error("", "", f"a{ch}", f"b{ch}") is None  # only name/role are YAML-checked


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/home/me/project", True),
        ("/workspace", True),
        ("/etcetera", True),
        ("relative/dir", False),
        ("/home/../etc", False),
        ("/etc", False),
        ("/etc/app", False),
        ("//etc/app", False),
        ("/usr/local/src", False),
        ("/var", False),
        ("/proc/1", False),
    ],
)
def test_workspace_dir_rules(path: str, ok: bool) -> None:
    assert workspace_dir_ok(path) is ok


def test_workspace_access_rules() -> None:
    assert workspace_access_ok("none", "")
    assert workspace_access_ok("", "")
    assert not workspace_access_ok("read_only", "")
    assert workspace_access_ok("read_write", "/home/me")
    assert not workspace_access_ok("admin", "/home/me")


def test_crypto_key_forms() -> None:
    key = os.urandom(32)
    assert parse_key(base64.b64encode(key).decode()) == key
    raw32 = "!" * 32  # not base64: used as the raw key
    assert parse_key(raw32) == raw32.encode()
    assert parse_key("a" * 32) is None  # valid base64 of 24 bytes: disabled, not retried raw
    assert parse_key("") is None
    assert parse_key("short!") is None


def test_crypto_round_trip_and_versions() -> None:
    on = SecretsCrypto(os.urandom(32))
    blob, version = on.encrypt(b"s3cret")
    assert version == 1 and blob != b"s3cret" and len(blob) == 12 + len(b"s3cret") + 16
    assert on.decrypt(blob, 1) == b"s3cret"
    assert on.decrypt(b"plain", 0) == b"plain"  # historical plaintext rows stay readable
    with pytest.raises(DecryptError):
        SecretsCrypto(os.urandom(32)).decrypt(blob, 1)  # wrong key
    off = SecretsCrypto(None)
    assert off.encrypt(b"x") == (b"x", 0)
    with pytest.raises(DecryptError):
        off.decrypt(blob, 1)
    with pytest.raises(DecryptError):
        on.decrypt(blob, 7)


def test_template_line_scan() -> None:
    nested = 'name: x\nruntime: hermes\nruntime_config:\n  model: "openai/gpt-4o"\n  timeout: 0\n'
    assert scan_runtime_and_model(nested) == ("hermes", "openai/gpt-4o")
    legacy = "runtime: claude-code\nmodel: 'sonnet'\n"
    assert scan_runtime_and_model(legacy) == ("claude-code", "sonnet")
    # indented model outside runtime_config and runtime_config: itself are not matches
    other = "skills:\n  model: nope\nruntime_config:\n  x: 1\n"
    assert scan_runtime_and_model(other) == ("", "")
    assert scan_runtime_and_model("  runtime: indented\n") == ("", "")


def test_provision_timeouts_take_max_per_runtime(tmp_path: Path) -> None:
    def tpl(name: str, body: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(body)

    tpl("a", "runtime: hermes\nruntime_config:\n  provision_timeout_seconds: 600\n")
    tpl("b", "runtime: hermes\nruntime_config:\n  provision_timeout_seconds: 1200\n")
    tpl("c", "runtime: langgraph\nruntime_config:\n  provision_timeout_seconds: 0\n")
    tpl("d", "runtime_config:\n  provision_timeout_seconds: 99\n")  # no runtime: ignored
    tpl("e", "runtime: crewai\nruntime_config: [unclosed\n")  # unparseable: ignored
    tpl("f", "runtime: autogen\nruntime_config:\n  provision_timeout_seconds: '300'\n")  # not an int
    assert load_provision_timeouts(tmp_path) == {"hermes": 1200}
    assert load_provision_timeouts(tmp_path / "missing") == {}


def test_truncate_utf8_never_splits() -> None:
    assert truncate_utf8("abc", 10) == "abc"
    assert truncate_utf8("aé", 2) == "a"
    assert len(truncate_utf8("é" * 10, 7).encode()) == 6


def test_budget_limit_parsing() -> None:
    assert parse_budget_limit(None) is None
    assert parse_budget_limit(500) == 500
    assert parse_budget_limit(12.9) == 12
    assert parse_budget_limit(0) == 0
    for bad, msg in (
        (-1, "budget_limit must be >= 0 (USD cents)"),
        ("500", "budget_limit must be an integer (USD cents) or null"),
        (True, "budget_limit must be an integer (USD cents) or null"),
        (1e30, "budget_limit must be an integer (USD cents) or null"),
    ):
        with pytest.raises(ApiError) as e:
            parse_budget_limit(bad)
        assert (e.value.status, e.value.body) == (400, {"error": msg})


def test_connection_block_fills_placeholders() -> None:
    block = connection_block("wid", "https://p.example", "tok")
    assert list(block) == sorted(block)
    assert block["registry_endpoint"] == "https://p.example/registry/register"
    assert block["heartbeat_endpoint"] == "https://p.example/registry/heartbeat"
    for snippet in (block["curl_register_template"], block["python_snippet"]):
        assert "https://p.example" in snippet and "wid" in snippet
        assert "{platform_url}" not in snippet and "{workspace_id}" not in snippet


def test_connection_block_has_the_canvas_token_placeholders() -> None:
    """The reference canvas fills the token in by replacing these exact strings (ExternalConnectModal)."""
    block = connection_block("wid", "https://p.example", "tok")
    python_line = 'AUTH_TOKEN    = "<paste from create response>"'
    shell_line = 'WORKSPACE_AUTH_TOKEN="<paste from create response>"'
    assert python_line in block["python_snippet"]
    assert shell_line in block["curl_register_template"]
    filled = block["python_snippet"].replace(python_line, 'AUTH_TOKEN    = "tok"')
    compile(filled, "<snippet>", "exec")  # still valid Python once filled
