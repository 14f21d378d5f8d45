"""The workspace statuses (spec 01 §1.3): the ten values of the `workspaces.status` CHECK constraint.

A `StrEnum`: a member compares equal to its string and is stored and serialised as the plain string, so
code may compare a row's status with `Status.REMOVED` and JSON output stays `"removed"`. Only
`workspaces/lifecycle.py` changes a row's status; this module has no imports so any layer may name them.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PROVISIONING = "provisioning"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    FAILED = "failed"
    PAUSED = "paused"
    HIBERNATING = "hibernating"
    HIBERNATED = "hibernated"
    REMOVED = "removed"
    AWAITING_AGENT = "awaiting_agent"


LIVE_STATUSES = (Status.ONLINE, Status.DEGRADED)
