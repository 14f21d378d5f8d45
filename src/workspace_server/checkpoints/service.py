"""Checkpoint rules (spec 05 §7): validation, the unknown-workspace 404, and the reference's bodies.

Bad input is always a 400 `invalid request body` (wrong types, a step_index outside the INTEGER column,
a payload the databases cannot store), never the 500 a failed INSERT would give. A workspace id that is
not a UUID names no workspace, so it is answered without a query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.activity.service import sorted_keys
from workspace_server.checkpoints import store
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonnum import storable_json
from workspace_server.common.time import rfc3339
from workspace_server.context import AppContext
from workspace_server.workspaces.store import workspace_exists

log = logging.getLogger(__name__)

BAD_BODY = "invalid request body"
NO_WORKFLOW = "no checkpoints found for workflow"
NO_WORKSPACE_CHECKPOINTS = "no checkpoints found for workspace"
INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class Step:
    workflow_id: str
    step_name: str
    step_index: int
    payload: Any


# the body parse_step accepts, for /openapi.json
STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workflow_id", "step_name"],
    "properties": {
        "workflow_id": {"type": "string", "minLength": 1},
        "step_name": {"type": "string", "minLength": 1},
        "step_index": {
            "anyOf": [{"type": "integer", "minimum": INT32[0], "maximum": INT32[1]}, {"type": "null"}]
        },
        "payload": {},
    },
}


def _required_text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:  # Go's `binding:"required"`: absent, null or "" refused
        raise ApiError(400, BAD_BODY)
    return value


def _step_index(data: dict[str, Any]) -> int:
    value = data.get("step_index")
    if value is None:  # absent or null: Go's zero value
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not INT32[0] <= value <= INT32[1]:
        raise ApiError(400, BAD_BODY)
    return value


def parse_step(data: Any) -> Step:
    """The `POST /workspaces/:id/checkpoints` body as `read_json` decoded it (which already refused what
    the databases cannot store); every refusal is 400 `invalid request body`."""
    if not isinstance(data, dict):
        raise ApiError(400, BAD_BODY)
    return Step(
        workflow_id=_required_text(data, "workflow_id"),
        step_name=_required_text(data, "step_name"),
        step_index=_step_index(data),
        payload=data.get("payload"),  # absent and null are both stored as JSON null
    )


def entry(row: Any) -> dict[str, Any]:
    """One checkpoint in the reference's struct field order."""
    return {
        "id": row.id,
        "workspace_id": row.workspace_id,
        "workflow_id": row.workflow_id,
        "step_name": row.step_name,
        "step_index": row.step_index,
        "completed_at": rfc3339(row.completed_at),
        "payload": row.payload,
    }


async def upsert(ctx: AppContext, raw_ws: str, step: Step) -> dict[str, Any]:
    """201 `{"id","step_name","workflow_id","workspace_id"}` (a map in Go: sorted keys)."""
    ws_id = parse_uuid(raw_ws)
    if ws_id is None:
        raise ApiError(404, "workspace not found")
    try:
        async with ctx.engine.begin() as conn:
            row_id = await _upsert_in(conn, ws_id, step)
    except ApiError:
        raise
    except Exception:
        log.exception("upserting checkpoint %s/%s of %s failed", step.workflow_id, step.step_name, ws_id)
        raise ApiError(500, "failed to upsert checkpoint") from None
    body = {
        "id": row_id,
        "workspace_id": raw_ws,
        "workflow_id": step.workflow_id,
        "step_name": step.step_name,
    }
    return sorted_keys(body)


async def _upsert_in(conn: AsyncConnection, ws_id: str, step: Step) -> str:
    if not await workspace_exists(conn, ws_id):
        raise ApiError(404, "workspace not found")
    try:
        return await store.upsert(
            conn,
            workspace_id=ws_id,
            workflow_id=step.workflow_id,
            step_name=step.step_name,
            step_index=step.step_index,
            payload=step.payload,
        )
    except IntegrityError:  # the workspace was purged between the check and the write
        raise ApiError(404, "workspace not found") from None


async def latest(ctx: AppContext, raw_ws: str) -> dict[str, Any]:
    ws_id = parse_uuid(raw_ws)
    row = None
    if ws_id is not None:
        try:
            async with ctx.engine.connect() as conn:
                row = await store.latest(conn, ws_id)
        except Exception:
            log.exception("latest checkpoint of %s failed", ws_id)
            raise ApiError(500, "failed to fetch latest checkpoint") from None
    if row is None:
        raise ApiError(404, NO_WORKSPACE_CHECKPOINTS)
    return entry(row)


async def list_workflow(ctx: AppContext, raw_ws: str, workflow_id: str) -> list[dict[str, Any]]:
    """A workflow's steps, highest step_index first; none → 404."""
    ws_id = parse_uuid(raw_ws)
    rows = []
    if ws_id is not None and storable_json(workflow_id):
        try:
            async with ctx.engine.connect() as conn:
                rows = await store.list_workflow(conn, ws_id, workflow_id)
        except Exception:
            log.exception("listing checkpoints of %s/%s failed", ws_id, workflow_id)
            raise ApiError(500, "failed to list checkpoints") from None
    if not rows:
        raise ApiError(404, NO_WORKFLOW)
    return [entry(r) for r in rows]


async def delete_workflow(ctx: AppContext, raw_ws: str, workflow_id: str) -> dict[str, Any]:
    ws_id = parse_uuid(raw_ws)
    deleted = 0
    if ws_id is not None and storable_json(workflow_id):
        try:
            async with ctx.engine.begin() as conn:
                deleted = await store.delete_workflow(conn, ws_id, workflow_id)
        except Exception:
            log.exception("deleting checkpoints of %s/%s failed", ws_id, workflow_id)
            raise ApiError(500, "failed to delete checkpoints") from None
    if not deleted:
        raise ApiError(404, NO_WORKFLOW)
    return {"deleted": deleted, "workflow_id": workflow_id}
