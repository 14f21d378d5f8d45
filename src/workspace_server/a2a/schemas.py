"""Request bodies and wire constants of the A2A routes (spec 04 §1, §2).

Strict string types: Go's binder coerces nothing, and `binding:"required"` refuses absent, null and "".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

SYSTEM_CALLER_PREFIXES = ("webhook:", "system:", "test:", "channel:")

# Error texts clients match on (spec 04 §1).
INVALID_CALLER = "invalid caller ID"
MISSING_CALLER_TOKEN = "missing caller auth token"  # noqa: S105 - a message, not a secret
INVALID_CALLER_TOKEN = "invalid caller auth token"  # noqa: S105
ACCESS_DENIED = "access denied: workspaces cannot communicate per hierarchy rules"
BUDGET_EXCEEDED = "workspace budget limit exceeded"
NOT_FOUND = "workspace not found"
LOOKUP_FAILED = "lookup failed"
WAKING = "workspace is waking from hibernation — retry in ~15 seconds"
NO_URL = "workspace has no URL"
NOT_ROUTABLE = "workspace URL is not publicly routable"
INVALID_JSON = "invalid JSON"
BUILD_FAILED = "failed to create proxy request"
READ_FAILED = "failed to read agent response"
RESTARTING = "workspace agent unreachable — container restart triggered"
BUSY_SESSION = "workspace agent busy — adapter handles retry (native_session)"
BUSY_QUEUED = "workspace agent busy — request queued, will dispatch when capacity available"
BUSY_RETRY = "workspace agent busy — retry after a short backoff"
UNREACHABLE = "failed to reach workspace agent"
# Ours (spec 04 §8.2 fix): an idle timeout is not "busy"; the agent may still be working on it.
IDLE_TIMEOUT = "workspace agent did not respond within the idle timeout — the request may still be processing"

BUSY_RETRY_AFTER = 30
WAKE_RETRY_AFTER = 15


def is_system_caller(caller: str) -> bool:
    return caller.startswith(SYSTEM_CALLER_PREFIXES)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DelegateRequest(_Body):
    target_id: StrictStr = Field(min_length=1)
    task: StrictStr = Field(min_length=1)
    idempotency_key: StrictStr | None = None


class RecordRequest(_Body):
    target_id: StrictStr = Field(min_length=1)
    task: StrictStr = Field(min_length=1)
    delegation_id: StrictStr = Field(min_length=1)


class UpdateRequest(_Body):
    status: StrictStr = Field(min_length=1)
    error: StrictStr | None = None
    response_preview: StrictStr | None = None


# The proxy's body, as `/openapi.json` documents it (the proxy itself only needs a JSON object: a missing
# `jsonrpc`/`id` is filled in, a missing `params.message.messageId` generated; spec 04 §1.2).
A2A_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"type": ["string", "integer"]},
        "method": {"type": "string", "examples": ["message/send"]},
        "params": {
            "type": "object",
            "properties": {
                "message": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string", "enum": ["user", "agent"]},
                        "messageId": {"type": "string"},
                        "parts": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
        },
    },
    "required": ["method"],
}
