"""Request bodies of the registry routes (spec 03 §1.2–§1.7, spec 07 §4).

Any validation failure is 400 `invalid request body`. A JSON `null` counts as the field's zero value,
as Go's decoder treats it; unknown keys are ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class UpdateCardRequest(_Body):
    workspace_id: str = Field(min_length=1)
    agent_card: Any

    @classmethod
    def _nullable(cls) -> frozenset[str]:
        return frozenset({"agent_card"})


class CheckAccessRequest(_Body):
    caller_id: str = Field(min_length=1)
    target_id: str = Field(min_length=1)
