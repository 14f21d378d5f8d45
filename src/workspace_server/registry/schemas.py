"""Request bodies of the registry routes (spec 03 §1.2–§1.7, spec 07 §4).

Any validation failure is 400 `invalid request body`. A JSON `null` counts as the field's zero value,
as Go's decoder treats it; unknown keys are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workspace_server.common.jsonbody import parse_model

INT32_MAX = 2**31 - 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            keep_null = cls._nullable()
            return {k: v for k, v in data.items() if v is not None or k in keep_null}
        return data

    @classmethod
    def _nullable(cls) -> frozenset[str]:
        return frozenset()


class RegisterRequest(_Body):
    id: str = Field(min_length=1)
    url: str = Field(min_length=1)
    agent_card: Any  # any JSON, including null; the key itself is required

    @classmethod
    def _nullable(cls) -> frozenset[str]:
        return frozenset({"agent_card"})


class RuntimeMetadata(_Body):
    capabilities: dict[str, bool] = Field(default_factory=dict)
    idle_timeout_seconds: int = Field(default=0, ge=0, le=INT32_MAX)


class HeartbeatRequest(_Body):
    workspace_id: str = Field(min_length=1)
    error_rate: float = 0.0
    sample_error: str = ""
    active_tasks: int = Field(default=0, ge=-INT32_MAX, le=INT32_MAX)
    uptime_seconds: int = Field(default=0, ge=-INT32_MAX, le=INT32_MAX)
    current_task: str = ""
    monthly_spend: int = 0  # cents; clamped, never rejected (#615)
    runtime_state: str = ""
    runtime_metadata: RuntimeMetadata | None = None


@dataclass(slots=True)
class Heartbeat:
    """A validated heartbeat body as the service reads it: `HeartbeatRequest`'s fields, in a plain object
    (`parse_heartbeat`)."""

    workspace_id: str
    error_rate: float = 0.0
    sample_error: str = ""
    active_tasks: int = 0
    uptime_seconds: int = 0
    current_task: str = ""
    monthly_spend: int = 0
    runtime_state: str = ""
    runtime_metadata: RuntimeMetadata | None = None


_HEARTBEAT_FIELDS = frozenset(HeartbeatRequest.model_fields)
_HEARTBEAT_STRINGS = frozenset({"workspace_id", "sample_error", "current_task", "runtime_state"})
_HEARTBEAT_INT32 = frozenset({"active_tasks", "uptime_seconds"})
_EXACT_FLOAT_INT = 2**53  # ints up to this size are exactly what pydantic's float(value) gives
_INT64 = 2**63


def parse_heartbeat(data: Any, error: str = "invalid request body") -> Heartbeat:
    """`parse_model(HeartbeatRequest, data, error)` as a `Heartbeat`: the same values and the same errors.

    Every agent sends one every 30 s, so the common body (plain strings, ints in range, a finite float, no
    `runtime_metadata`) is checked here by hand at a third of pydantic's cost; anything else (a bool, a
    numeric string, an int out of range, a nested object, a bad value) goes through the model itself, so
    whatever pydantic would coerce or refuse it still does (tests/unit/test_registry_schemas.py compares
    the two on a table of bodies)."""
    fast = _plain_heartbeat(data)
    if fast is not None:
        return fast
    body = parse_model(HeartbeatRequest, data, error)
    return Heartbeat(
        workspace_id=body.workspace_id,
        error_rate=body.error_rate,
        sample_error=body.sample_error,
        active_tasks=body.active_tasks,
        uptime_seconds=body.uptime_seconds,
        current_task=body.current_task,
        monthly_spend=body.monthly_spend,
        runtime_state=body.runtime_state,
        runtime_metadata=body.runtime_metadata,
    )


def _plain_heartbeat(data: Any) -> Heartbeat | None:
    """The body when every known key holds a value the model would take as it is (or null); else None."""
    if type(data) is not dict:
        return None
    hb = Heartbeat("")
    for key, value in data.items():
        kind = type(value)
        if value is None or key not in _HEARTBEAT_FIELDS:
            continue  # null is the zero value; unknown keys are ignored
        if kind is str:
            if key in _HEARTBEAT_STRINGS:
                setattr(hb, key, value)
                continue
        elif kind is int:
            if key in _HEARTBEAT_INT32:
                if -INT32_MAX <= value <= INT32_MAX:
                    setattr(hb, key, value)
                    continue
            elif key == "monthly_spend":
                if -_INT64 <= value < _INT64:
                    hb.monthly_spend = value
                    continue
            elif key == "error_rate" and -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
                hb.error_rate = float(value)
                continue
        elif kind is float and key == "error_rate" and math.isfinite(value):
            hb.error_rate = value
            continue
        return None
    return hb if hb.workspace_id else None


class UpdateCardRequest(_Body):
    workspace_id: str = Field(min_length=1)
    agent_card: Any

    @classmethod
    def _nullable(cls) -> frozenset[str]:
        return frozenset({"agent_card"})


class CheckAccessRequest(_Body):
    caller_id: str = Field(min_length=1)
    target_id: str = Field(min_length=1)
