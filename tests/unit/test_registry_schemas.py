"""Registry request bodies: required keys, Go-style nulls, rejected values (spec 03 §1.2–§1.7)."""

from __future__ import annotations

from typing import Any

import pytest

from workspace_server.common.errors import ApiError
from workspace_server.common.http import first_headers, parse_model
from workspace_server.registry.schemas import (
    HeartbeatRequest,
    RegisterRequest,
    UpdateCardRequest,
    parse_heartbeat,
)


def test_register_agent_card_key_required_but_may_be_null() -> None:
    body = parse_model(RegisterRequest, {"id": "a", "url": "http://x", "agent_card": None})
    assert body.agent_card is None
    with pytest.raises(ApiError) as err:
        parse_model(RegisterRequest, {"id": "a", "url": "http://x"})
    assert (err.value.status, err.value.body) == (400, {"error": "invalid request body"})


def test_heartbeat_defaults_and_nulls() -> None:
    hb = parse_model(
        HeartbeatRequest, {"workspace_id": "w", "current_task": None, "active_tasks": None, "extra": 1}
    )
    assert (hb.current_task, hb.active_tasks, hb.error_rate, hb.monthly_spend, hb.runtime_metadata) == (
        "",
        0,
        0.0,
        0,
        None,
    )
    hb = parse_model(
        HeartbeatRequest,
        {"workspace_id": "w", "runtime_metadata": {"capabilities": {"session": True}}},
    )
    assert hb.runtime_metadata is not None
    assert (hb.runtime_metadata.capabilities, hb.runtime_metadata.idle_timeout_seconds) == (
        {"session": True},
        0,
    )


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"workspace_id": ""},
        {"workspace_id": 5},
        {"workspace_id": "w", "error_rate": float("nan")},
        {"workspace_id": "w", "error_rate": float("inf")},
        {"workspace_id": "w", "active_tasks": 2**40},
        {"workspace_id": "w", "runtime_metadata": {"idle_timeout_seconds": -1}},
        {"workspace_id": "w", "runtime_metadata": "x"},
    ],
)
def test_heartbeat_rejects(data: dict[str, Any]) -> None:
    with pytest.raises(ApiError):
        parse_model(HeartbeatRequest, data)


def test_update_card_requires_both() -> None:
    with pytest.raises(ApiError):
        parse_model(UpdateCardRequest, {"workspace_id": "w"})
    assert parse_model(UpdateCardRequest, {"workspace_id": "w", "agent_card": {}}).agent_card == {}


_HEARTBEAT_BODIES: list[Any] = [
    {"workspace_id": "w"},
    {"workspace_id": "w", "error_rate": 0.0, "sample_error": "", "active_tasks": 0, "uptime_seconds": 30},
    {"workspace_id": "w", "error_rate": 1, "active_tasks": 3, "current_task": "t", "monthly_spend": 12},
    {"workspace_id": "w", "error_rate": 0.75, "runtime_state": "wedged", "extra": [1, {"a": None}]},
    {"workspace_id": "w", "current_task": None, "active_tasks": None, "runtime_metadata": None},
    {"workspace_id": "w", "error_rate": 2**53},
    {"workspace_id": "w", "error_rate": 2**53 + 1},
    {"workspace_id": "w", "error_rate": -(2**80)},
    {"workspace_id": "w", "error_rate": True},
    {"workspace_id": "w", "error_rate": "0.5"},
    {"workspace_id": "w", "error_rate": "x"},
    {"workspace_id": "w", "error_rate": float("nan")},
    {"workspace_id": "w", "error_rate": float("-inf")},
    {"workspace_id": "w", "active_tasks": 2**31 - 1, "uptime_seconds": -(2**31 - 1)},
    {"workspace_id": "w", "active_tasks": 2**31},
    {"workspace_id": "w", "uptime_seconds": -(2**31)},
    {"workspace_id": "w", "active_tasks": True},
    {"workspace_id": "w", "active_tasks": 1.0},
    {"workspace_id": "w", "active_tasks": 1.5},
    {"workspace_id": "w", "active_tasks": "2"},
    {"workspace_id": "w", "monthly_spend": 2**63 - 1},
    {"workspace_id": "w", "monthly_spend": 2**63},
    {"workspace_id": "w", "monthly_spend": -(2**70)},
    {"workspace_id": "w", "monthly_spend": 2.0},
    {"workspace_id": "w", "sample_error": 1},
    {"workspace_id": "w", "current_task": ["x"]},
    {"workspace_id": "w", "runtime_state": False},
    {"workspace_id": "w", "runtime_metadata": {"capabilities": {"status_mgmt": True}}},
    {"workspace_id": "w", "runtime_metadata": {"idle_timeout_seconds": -1}},
    {"workspace_id": "w", "runtime_metadata": "x"},
    {"workspace_id": ""},
    {"workspace_id": 5},
    {"workspace_id": None},
    {},
    [],
    "w",
    None,
]


@pytest.mark.parametrize("data", _HEARTBEAT_BODIES)
def test_parse_heartbeat_is_the_model(data: Any) -> None:
    """The hand-checked fast path gives what pydantic gives (values and types), or the same error."""
    try:
        want = parse_model(HeartbeatRequest, data)
    except ApiError as exc:
        with pytest.raises(ApiError) as err:
            parse_heartbeat(data)
        assert (err.value.status, err.value.body) == (exc.status, exc.body)
        return
    got = parse_heartbeat(data)
    for name in HeartbeatRequest.model_fields:
        value, expected = getattr(got, name), getattr(want, name)
        assert (type(value), value) == (type(expected), expected), name


def test_first_headers_reads_as_starlette_does() -> None:
    from starlette.datastructures import Headers

    raw = [
        (b"x-workspace-id", b"a"),
        (b"authorization", b"Bearer t"),
        (b"x-workspace-id", b"b"),
        (b"x-n", b"\xe9"),
    ]
    got = first_headers({"headers": raw})
    want = Headers(raw=raw)
    assert got == {"x-workspace-id": "a", "authorization": "Bearer t", "x-n": "é"}
    assert all(got[k] == want[k] for k in got)
