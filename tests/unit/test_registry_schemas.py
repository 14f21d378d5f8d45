"""Registry request bodies: required keys, Go-style nulls, rejected values (spec 03 §1.2–§1.7)."""

from __future__ import annotations

from typing import Any

import pytest

from workspace_server.common.errors import ApiError
from workspace_server.common.http import parse_model
from workspace_server.registry.schemas import HeartbeatRequest, RegisterRequest, UpdateCardRequest


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
