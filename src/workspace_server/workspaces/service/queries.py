"""Reads: the workspace list, one workspace, and the state an agent polls."""

from __future__ import annotations

import logging
from typing import Any

from workspace_server import authz
from workspace_server.activity.service import sorted_keys
from workspace_server.common.errors import ApiError
from workspace_server.common.jsonnum import go_float
from workspace_server.common.time import rfc3339
from workspace_server.workspaces import store
from workspace_server.workspaces.service.base import ServiceBase
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.templates import runtime_provision_timeouts

# The public face's logger name, for every part: log configuration and filters keep seeing one service.
log = logging.getLogger(__package__)


class QueryOps(ServiceBase):
    async def list_views(self) -> list[dict[str, Any]]:
        rows = await self.query(store.list_workspace_views, failed="list workspaces failed")
        timeouts = await runtime_provision_timeouts(self.settings)
        return [_view(r, timeouts, full=True) for r in rows]

    async def get_view(self, ws_id: str) -> dict[str, Any]:
        row = await self.query(store.get_workspace_view, ws_id, failed=f"get workspace {ws_id} failed")
        if row is None:
            raise ApiError(404, "workspace not found")
        return _view(row, await runtime_provision_timeouts(self.settings), full=False)

    async def state(self, ws_id: str, bearer: str) -> tuple[int, dict[str, Any]]:
        """Agent polling endpoint; once the workspace has live tokens only its own token may ask."""
        await authz.token_holder(self.ctx, authz.Credentials(bearer=bearer), ws_id, tokenless="always")
        status = await self.query(store.workspace_status, ws_id, failed=f"state {ws_id}: query failed")
        if status is None:
            return 404, {"deleted": True, "workspace_id": ws_id}
        if status == Status.REMOVED:
            return 404, {"deleted": True, "status": "removed", "workspace_id": ws_id}
        return 200, {
            "deleted": False,
            "paused": status == Status.PAUSED,
            "status": status,
            "workspace_id": ws_id,
        }


def _view(row: Any, timeouts: dict[str, int], *, full: bool) -> dict[str, Any]:
    """One workspace as the list (full) or the open single GET renders it (spec 01 §3)."""
    runtime = "langgraph" if row.runtime is None else row.runtime
    d: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "role": row.role or None,
        "tier": row.tier,
        "status": row.status,
        "url": row.url or "",
        "parent_id": row.parent_id,
        "active_tasks": row.active_tasks,
        "max_concurrent_tasks": 1 if row.max_concurrent_tasks is None else row.max_concurrent_tasks,
        "last_error_rate": go_float(row.last_error_rate),
        "uptime_seconds": row.uptime_seconds,
        "runtime": runtime,
        "x": go_float(row.x),
        "y": go_float(row.y),
        "collapsed": bool(row.collapsed),
        "agent_card": row.agent_card,
    }
    if full:
        d["last_sample_error"] = row.last_sample_error or ""
        d["current_task"] = row.current_task or ""
        d["workspace_dir"] = row.workspace_dir or None
        d["monthly_spend"] = row.monthly_spend or 0
        d["budget_limit"] = row.budget_limit
    else:  # the open GET must not leak budget, task, error or host path (#611, #955)
        d["last_outbound_at"] = rfc3339(row.last_outbound_at)
    secs = timeouts.get(runtime)
    if secs:
        d["provision_timeout_ms"] = secs * 1000
    return sorted_keys(d)
