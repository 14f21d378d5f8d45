"""Changes to an existing workspace: PATCH, its config, its budget, the canvas viewport, and the agent's
bootstrap-failed report."""

from __future__ import annotations

import logging
from typing import Any

from workspace_server.activity.service import sorted_keys
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonnum import go_float, storable_json
from workspace_server.workspaces import store
from workspace_server.workspaces.schemas import (
    INT32_MAX,
    INT64_MAX,
    as_number,
    workspace_dir_ok,
    workspace_fields_error,
)
from workspace_server.workspaces.service.base import ServiceBase, truncate_utf8

# The public face's logger name, for every part: log configuration and filters keep seeing one service.
log = logging.getLogger(__package__)

BOOTSTRAP_TAIL_BYTES = 8192
BOOTSTRAP_ERROR_BYTES = 8192
BOOTSTRAP_DEFAULT_ERROR = "bootstrap failed — see log_tail"


class UpdateOps(ServiceBase):
    async def update(self, ws_id: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """PATCH: field rules, then existence, then body validity (the reference's order)."""
        fields = body or {}

        def text(key: str) -> str:
            v = fields.get(key)
            return v if isinstance(v, str) else ""

        err = workspace_fields_error(text("name"), text("role"), "", text("runtime"))
        if err:
            raise ApiError(400, err)
        async with self.engine.connect() as conn:
            if not await store.workspace_exists(conn, ws_id):
                raise ApiError(404, "workspace not found")
        if body is None or not storable_json(body):
            raise ApiError(400, "invalid request body")
        wdir = body.get("workspace_dir")
        # checked before any write so a bad path leaves the row untouched (the reference wrote earlier keys)
        if isinstance(wdir, str) and wdir and not workspace_dir_ok(wdir):
            raise ApiError(400, "invalid workspace directory")
        if "hibernation_idle_minutes" in body and _idle_minutes(body["hibernation_idle_minutes"]) is None:
            raise ApiError(400, IDLE_MINUTES_ERROR)

        for key, values in _patch_columns(body):
            await self._write(ws_id, key, store.update_columns, **values)
        if isinstance(body.get("collapsed"), bool):
            await self._write(ws_id, "collapsed", store.upsert_layout, collapsed=body["collapsed"])
        if "x" in body and "y" in body:
            x, y = as_number(body["x"]), as_number(body["y"])
            if x is None or y is None:
                log.info("update %s: x/y not numbers; position unchanged", ws_id)
            else:
                await self._write(ws_id, "position", store.upsert_layout, x=x, y=y)
        resp: dict[str, Any] = {"status": "updated"}
        if "workspace_dir" in body:
            resp["needs_restart"] = True
        return sorted_keys(resp)

    async def _write(self, ws_id: str, what: str, fn: Any, **values: Any) -> None:
        """One key, one transaction: a failing write is logged and the others still apply."""
        try:
            async with self.engine.begin() as conn:
                await fn(conn, ws_id, **values)
        except Exception:
            log.exception("update %s: writing %s failed", ws_id, what)

    # ------------------------------------------------------------------ config

    async def get_config(self, ws_id: str) -> dict[str, Any]:
        data = await self.query(store.get_config, ws_id, failed=f"config get {ws_id} failed")
        return {"data": {} if data is None else data}

    async def patch_config(self, ws_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        lock = self.ctx.workspace_config_lock
        try:
            async with lock, self.engine.begin() as conn:
                if not await store.workspace_exists(conn, ws_id):
                    raise ApiError(404, "workspace not found")
                await store.merge_config(conn, ws_id, patch)
        except ApiError:
            raise
        except Exception:
            log.exception("config patch %s failed", ws_id)
            raise ApiError(500, "failed to update config") from None
        return {"status": "updated"}

    # ------------------------------------------------------------------ budget

    async def get_budget(self, ws_id: str) -> dict[str, Any]:
        row = await self.query(store.get_budget, ws_id, failed=f"budget get {ws_id} failed")
        if row is None:
            raise ApiError(404, "workspace not found")
        return budget_view(row.budget_limit, row.monthly_spend)

    async def patch_budget(self, ws_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if "budget_limit" not in body:
            raise ApiError(400, "budget_limit field is required")
        limit = parse_budget_limit(body["budget_limit"])
        try:
            async with self.engine.begin() as conn:
                if not await store.workspace_exists(conn, ws_id, include_removed=False):
                    raise ApiError(404, "workspace not found")
                await store.update_columns(conn, ws_id, budget_limit=limit)
        except ApiError:
            raise
        except Exception:
            log.exception("budget patch %s failed", ws_id)
            raise ApiError(500, "update failed") from None
        return await self.get_budget(ws_id)

    # ------------------------------------------------------------------ bootstrap-failed

    async def bootstrap_failed(self, ws_id: str, error: str, log_tail: str) -> dict[str, Any]:
        # NUL cannot be stored in TEXT/JSONB; a console tail may carry one, and it carries no meaning
        error, tail = error.replace("\x00", ""), log_tail.replace("\x00", "")
        raw_tail = tail.encode()
        if len(raw_tail) > BOOTSTRAP_TAIL_BYTES:
            tail = "...(truncated)...\n" + raw_tail[-BOOTSTRAP_TAIL_BYTES:].decode(errors="ignore")
        message = error.strip() or BOOTSTRAP_DEFAULT_ERROR
        try:
            changed = await self.ctx.lifecycle.mark_failed(
                ws_id,
                truncate_utf8(message + "\n\n" + tail, BOOTSTRAP_ERROR_BYTES),
                {"error": message, "log_tail": tail, "source": "bootstrap_watcher"},
            )
        except Exception:
            log.exception("bootstrap-failed %s: update failed", ws_id)
            raise ApiError(500, "db update failed") from None
        return {"ok": True} if changed else {"no_change": True, "ok": True}

    # ------------------------------------------------------------------ viewport

    async def get_viewport(self) -> dict[str, Any]:
        try:
            async with self.engine.connect() as conn:
                row = await store.get_viewport(conn)
        except Exception:
            log.exception("viewport get failed")
            row = None
        if row is None:
            return {"x": 0, "y": 0, "zoom": 1}
        return {"x": go_float(row.x), "y": go_float(row.y), "zoom": go_float(row.zoom)}

    async def save_viewport(self, x: float, y: float, zoom: float) -> dict[str, Any]:
        try:
            async with self.engine.begin() as conn:
                await store.save_viewport(conn, x, y, zoom)
        except Exception:
            log.exception("viewport save failed")
            raise ApiError(500, "failed to save viewport") from None
        return {"status": "saved"}


def _patch_columns(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The per-key column writes of PATCH, in the reference's order; unusable values are skipped."""
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(body.get("name"), str):
        out.append(("name", {"name": body["name"]}))
    if "role" in body and (body["role"] is None or isinstance(body["role"], str)):
        out.append(("role", {"role": body["role"] or None}))
    tier = _int32(body.get("tier"))
    if tier is not None:
        out.append(("tier", {"tier": tier}))
    if "parent_id" in body:
        raw = body["parent_id"]
        parent = parse_uuid(raw) if isinstance(raw, str) else None
        if raw is None or parent is not None:
            out.append(("parent_id", {"parent_id": parent}))
    if isinstance(body.get("runtime"), str):
        out.append(("runtime", {"runtime": body["runtime"]}))
    if "workspace_dir" in body and (body["workspace_dir"] is None or isinstance(body["workspace_dir"], str)):
        out.append(("workspace_dir", {"workspace_dir": body["workspace_dir"] or None}))
    if "hibernation_idle_minutes" in body:  # validated by the caller; 0 or null switches it off
        minutes = _idle_minutes(body["hibernation_idle_minutes"]) or None
        out.append(("hibernation_idle_minutes", {"hibernation_idle_minutes": minutes}))
    skipped = {"name", "role", "tier", "parent_id", "runtime", "workspace_dir"} & body.keys()
    skipped -= {k for k, _ in out}
    if skipped:
        log.info("update: ignoring keys with unusable values: %s", sorted(skipped))
    return out


IDLE_MINUTES_ERROR = "hibernation_idle_minutes must be a non-negative integer or null"


def _idle_minutes(value: Any) -> int | None:
    """PATCH's `hibernation_idle_minutes` (our extension: the reference has no API for the column):
    minutes as an int, 0 for null; None when unusable."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    n = _int32(value)
    return n if n is not None and n >= 0 else None


def _int32(value: Any) -> int | None:
    n = as_number(value)
    if n is None or not n.is_integer() or abs(n) > INT32_MAX:
        return None
    return int(n)


def parse_budget_limit(value: Any) -> int | None:
    """None clears the ceiling; numbers are truncated to whole cents; anything else is a 400."""
    if value is None:
        return None
    n = as_number(value)
    if n is None or n >= 2**63:
        raise ApiError(400, "budget_limit must be an integer (USD cents) or null")
    if n < 0:
        raise ApiError(400, "budget_limit must be >= 0 (USD cents)")
    return int(value) if isinstance(value, int) and value <= INT64_MAX else int(n)


def budget_view(limit: int | None, spend: int | None) -> dict[str, Any]:
    spend = spend or 0
    return {
        "budget_limit": limit,
        "monthly_spend": spend,
        "budget_remaining": None if limit is None else limit - spend,
    }
