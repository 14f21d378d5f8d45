"""Request bodies of the activity routes (spec 04 §4). Strict types: Go's binder coerces nothing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, StrictInt, StrictStr

# What an agent may report about itself; platform-only types (delegation, cron_run, …) are not here.
REPORTABLE_TYPES = (
    "a2a_send",
    "a2a_receive",
    "task_update",
    "agent_log",
    "skill_promotion",
    "memory_write",
    "error",
)
INVALID_TYPE = "invalid activity_type, must be one of: " + ", ".join(REPORTABLE_TYPES)


class ActivityReport(BaseModel):
    activity_type: StrictStr
    method: StrictStr = ""
    summary: StrictStr = ""
    target_id: StrictStr = ""
    source_id: StrictStr = ""
    status: StrictStr = ""
    error_detail: StrictStr = ""
    duration_ms: StrictInt | None = None
    request_body: Any = None
    response_body: Any = None
    metadata: Any = None


class Attachment(BaseModel):
    uri: StrictStr = ""
    name: StrictStr = ""
    mimeType: StrictStr = ""  # the wire name (camelCase)
    size: StrictInt = 0

    def wire(self) -> dict[str, Any]:
        """`{uri,name[,mimeType][,size]}`: empty optional fields are omitted, as Go's omitempty."""
        out: dict[str, Any] = {"uri": self.uri, "name": self.name}
        if self.mimeType:
            out["mimeType"] = self.mimeType
        if self.size:
            out["size"] = self.size
        return out


class NotifyBody(BaseModel):
    message: StrictStr = ""
    attachments: list[Attachment] | None = None
