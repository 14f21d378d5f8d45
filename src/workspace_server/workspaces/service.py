"""Workspace rules: create, views, update, delete cascade, state, config, budget, viewport (spec 01).

No HTTP here: routes parse the request and call these; errors are `ApiError`s with the reference's text.
Provisioning and stopping go through an optional backend hook, `ctx.provisioner`
(see `ProvisionerHook`); with none, creates fail fast with a clear reason and deletes stop nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from workspace_server.auth import tokens
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id, parse_uuid
from workspace_server.common.jsonnum import go_float, storable_json
from workspace_server.common.kv import URL_TTL, clear_workspace_keys, url_key
from workspace_server.common.time import rfc3339
from workspace_server.context import AppContext
from workspace_server.secrets.crypto import crypto_for
from workspace_server.workspaces import store
from workspace_server.workspaces.schemas import (
    INT32_MAX,
    INT64_MAX,
    CreateWorkspace,
    ProvisionSpec,
    as_number,
    workspace_access_ok,
    workspace_dir_ok,
    workspace_fields_error,
)
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.templates import (
    read_template_runtime_and_model,
    resolve_template,
    runtime_default_dir,
    runtime_provision_timeouts,
)

log = logging.getLogger(__name__)

NO_BACKEND_REASON = (
    "Docker not available — no workspace backend is configured on this server (WORKSPACE_BACKEND=none), "
    "so nothing was started. Run the agent yourself; its first POST /registry/register brings this "
    "workspace online."
)
NO_BACKEND_EVENT_ERROR = "Docker not available on this platform instance (no workspace backend configured)"
CONFIRM_MESSAGE = "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete."
DELETE_CLEANUP_SECONDS = 30.0
BOOTSTRAP_TAIL_BYTES = 8192
BOOTSTRAP_ERROR_BYTES = 8192
BOOTSTRAP_DEFAULT_ERROR = "bootstrap failed — see log_tail"


class ProvisionerHook(Protocol):
    """The backend seam: the composition root sets the orchestrator as `ctx.provisioner`.

    `provision` runs in the background after create and owns every later status change; `stop` must be
    idempotent (stopping an unknown workspace is not an error). An optional `remove_volume(ws_id)` is
    called after a successful stop on delete.
    """

    async def provision(self, spec: ProvisionSpec) -> None: ...
    async def stop(self, ws_id: str) -> None: ...


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    """Go renders map-shaped bodies (gin.H) with sorted keys; keep that order on the wire."""
    return dict(sorted(d.items()))


def truncate_utf8(text: str, max_bytes: int) -> str:
    """At most max_bytes of UTF-8, never splitting a character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode(errors="ignore")


class WorkspaceService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.engine = ctx.engine

    @property
    def provisioner(self) -> ProvisionerHook | None:
        return self.ctx.provisioner

    # ------------------------------------------------------------------ create

    async def create(self, p: CreateWorkspace, platform_url: str) -> dict[str, Any]:
        name = p.name or ""
        if not name:
            raise ApiError(400, "invalid workspace payload")
        role, model, runtime, template = p.role or "", p.model or "", p.runtime or "", p.template or ""
        # a string Postgres TEXT cannot hold (NUL, a lone surrogate) is a field error, checked first
        if not all(storable_json(s) for s in p.strings()) or workspace_fields_error(
            name, role, model, runtime
        ):
            raise ApiError(400, "invalid workspace fields")
        if p.budget_limit is not None and p.budget_limit < 0:
            raise ApiError(400, "invalid workspace fields")
        parent_id: str | None = None
        if p.parent_id:
            parent_id = parse_uuid(p.parent_id)
            if parent_id is None:
                raise ApiError(400, "invalid workspace fields")
        tier = p.tier or 3

        # Every template name is checked before the insert (the reference skipped the check when runtime
        # and model were both given, then answered nothing and left the row provisioning; spec 01 §4.1.9).
        template_dir = None
        if template:
            template_dir = resolve_template(self.settings, template)
            if template_dir is None:
                raise ApiError(400, "invalid template")
            if not runtime or not model:
                t_runtime, t_model = await asyncio.to_thread(read_template_runtime_and_model, template_dir)
                runtime, model = runtime or t_runtime, model or t_model
        runtime = runtime or "langgraph"

        workspace_dir = p.workspace_dir or ""
        if workspace_dir and not workspace_dir_ok(workspace_dir):
            raise ApiError(400, "invalid workspace directory")
        access = p.workspace_access or "none"
        if not workspace_access_ok(access, workspace_dir):
            raise ApiError(400, "invalid workspace access")

        ws_id = new_id()
        max_tasks = p.max_concurrent_tasks if p.max_concurrent_tasks and p.max_concurrent_tasks > 0 else 1
        await self._insert_with_secrets(
            ws_id,
            p.secrets or {},
            name=name,
            role=role or None,
            tier=tier,
            runtime=runtime,
            parent_id=parent_id,
            workspace_dir=workspace_dir or None,
            workspace_access=access,
            budget_limit=p.budget_limit,
            max_concurrent_tasks=max_tasks,
        )
        await self._initial_layout(ws_id, p)
        if p.initial_memories:
            log.info("create %s: initial_memories ignored (no memory store yet)", ws_id)
        await self.ctx.events.record(
            "WORKSPACE_PROVISIONING", ws_id, {"name": name, "tier": tier, "runtime": runtime}
        )

        if p.external or runtime == "external":
            return await self._finish_external(ws_id, name, p.url or "", platform_url)

        spec = ProvisionSpec(
            workspace_id=ws_id,
            name=name,
            role=role,
            tier=tier,
            runtime=runtime,
            model=model,
            template=template,
            template_path=await asyncio.to_thread(self._config_source, template_dir, runtime),
            workspace_dir=workspace_dir,
            workspace_access=access,
            parent_id=parent_id,
        )
        hook = self.provisioner
        if hook is not None:
            self.ctx.tasks.spawn(f"provision-{ws_id}", self.run_provision(hook, spec))
        else:
            await self.fail_without_backend(ws_id, name, runtime, tier, template)
        return _sorted(
            {
                "id": ws_id,
                "status": "provisioning",
                "awareness_namespace": f"workspace:{ws_id}",
                "workspace_access": access,
            }
        )

    async def _insert_with_secrets(self, ws_id: str, secrets: dict[str, str], **columns: Any) -> None:
        """The row and its secrets commit together or not at all (#568)."""
        crypto = crypto_for(self.settings)
        try:
            async with self.engine.begin() as conn:
                parent_id = columns.get("parent_id")
                if parent_id and not await store.workspace_exists(conn, parent_id):
                    raise ApiError(400, "invalid workspace fields")
                await store.insert_workspace(conn, id=ws_id, **columns)
                for key in sorted(secrets):
                    try:
                        stored, version = crypto.encrypt(secrets[key].encode())
                    except Exception:
                        log.exception("create %s: encrypting secret %r failed", ws_id, key)
                        raise ApiError(500, f"failed to encrypt secret: {key}") from None
                    try:
                        await store.upsert_secret(conn, ws_id, key, stored, version)
                    except SQLAlchemyError:
                        log.exception("create %s: saving secret %r failed", ws_id, key)
                        raise ApiError(500, f"failed to save secret: {key}") from None
        except ApiError:
            raise
        except Exception:
            log.exception("create %s: insert failed", ws_id)
            raise ApiError(500, "failed to create workspace") from None

    async def _initial_layout(self, ws_id: str, p: CreateWorkspace) -> None:
        x = (p.canvas.x if p.canvas else None) or 0.0
        y = (p.canvas.y if p.canvas else None) or 0.0
        try:
            async with self.engine.begin() as conn:
                await store.upsert_layout(conn, ws_id, x=x, y=y)
        except Exception:  # best-effort: the node can be dragged into place later
            log.exception("create %s: canvas layout insert failed", ws_id)

    async def _finish_external(self, ws_id: str, name: str, url: str, platform_url: str) -> dict[str, Any]:
        """External workspaces: online at `url`, or awaiting their agent without one.

        The token is minted here, before the status moves, and shown once in the `connection` block:
        always without a url (the reference), and in production mode with one too, so that no workspace
        is ever online without a credential there (issue 11 §1). In the open bootstrap mode a workspace
        created with a url stays tokenless, as in the reference, and its first register mints its token.
        """
        lc = self.ctx.lifecycle
        payload = {"name": name, "external": True}
        token: str | None = None
        if not url or not self.settings.open_bootstrap:
            token = await self.mint_token(ws_id)
        if url:
            await lc.transition(
                ws_id,
                to=Status.ONLINE,
                expect=[Status.PROVISIONING],
                values={"url": url, "runtime": "external"},
                event="WORKSPACE_ONLINE",
                payload=payload,
            )
            try:
                await self.ctx.kv.set(url_key(ws_id), url, URL_TTL)
            except Exception:
                log.exception("external %s: caching url failed", ws_id)
            body: dict[str, Any] = {"id": ws_id, "external": True, "status": "online"}
            if token is not None:
                body["connection"] = connection_block(ws_id, platform_url, token)
            return _sorted(body)

        await lc.transition(
            ws_id, to=Status.AWAITING_AGENT, expect=[Status.PROVISIONING], values={"runtime": "external"}
        )
        await self.ctx.events.record("WORKSPACE_AWAITING_AGENT", ws_id, payload)
        return _sorted(
            {
                "id": ws_id,
                "external": True,
                "status": "awaiting_agent",
                "connection": connection_block(ws_id, platform_url, token or ""),
            }
        )

    async def mint_token(self, ws_id: str) -> str:
        """Issue a workspace token at create; "" when that fails (non-fatal, as the reference: an admin's
        `POST /workspaces/:id/tokens` mints one later, and a tokenless workspace is unreachable without
        a credential in production mode)."""
        try:
            async with self.engine.begin() as conn:
                return await tokens.issue_workspace_token(conn, ws_id)
        except Exception:
            log.exception("workspace %s: token issuance failed", ws_id)
            return ""

    def _config_source(self, template_dir: Any, runtime: str) -> Any:
        """First existing config source: the template dir, else `<runtime>-default`, else None (generate)."""
        if template_dir is None:
            return None
        if template_dir.is_dir():
            return template_dir
        fallback = runtime_default_dir(self.settings, runtime)
        return fallback if fallback.is_dir() else None

    async def run_provision(self, hook: ProvisionerHook, spec: ProvisionSpec) -> None:
        try:
            await hook.provision(spec)
        except Exception:  # the hook owns failure reporting; this only keeps the task from dying silently
            log.exception("provisioning %s raised", spec.workspace_id)

    async def fail_without_backend(
        self, ws_id: str, name: str, runtime: str, tier: int, template: str
    ) -> None:
        try:
            async with self.engine.begin() as conn:
                data = {"name": name, "runtime": runtime, "tier": tier, "template": template}
                await store.put_config(conn, ws_id, data)
        except Exception:
            log.exception("create %s: saving workspace_config failed", ws_id)
        await self.ctx.lifecycle.mark_failed(ws_id, NO_BACKEND_REASON, {"error": NO_BACKEND_EVENT_ERROR})

    # ------------------------------------------------------------------ views

    async def list_views(self) -> list[dict[str, Any]]:
        try:
            async with self.engine.connect() as conn:
                rows = await store.list_workspace_views(conn)
        except Exception:
            log.exception("list workspaces failed")
            raise ApiError(500, "query failed") from None
        timeouts = await runtime_provision_timeouts(self.settings)
        return [_view(r, timeouts, full=True) for r in rows]

    async def get_view(self, ws_id: str) -> dict[str, Any]:
        try:
            async with self.engine.connect() as conn:
                row = await store.get_workspace_view(conn, ws_id)
        except Exception:
            log.exception("get workspace %s failed", ws_id)
            raise ApiError(500, "query failed") from None
        if row is None:
            raise ApiError(404, "workspace not found")
        return _view(row, await runtime_provision_timeouts(self.settings), full=False)

    # ------------------------------------------------------------------ update

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
        return _sorted(resp)

    async def _write(self, ws_id: str, what: str, fn: Any, **values: Any) -> None:
        """One key, one transaction: a failing write is logged and the others still apply."""
        try:
            async with self.engine.begin() as conn:
                await fn(conn, ws_id, **values)
        except Exception:
            log.exception("update %s: writing %s failed", ws_id, what)

    # ------------------------------------------------------------------ delete

    async def delete(self, ws_id: str, *, confirm: bool, purge: bool) -> dict[str, Any]:
        try:
            async with self.engine.connect() as conn:
                children = await store.live_children(conn, ws_id)
                descendants = await store.live_descendants(conn, ws_id) if children else []
                exists = await store.workspace_exists(conn, ws_id)
        except Exception:
            log.exception("delete %s: child lookup failed", ws_id)
            raise ApiError(500, "failed to check children") from None
        if children and not confirm:
            conflict = ApiError(409, None)  # `status` is a body key here, so fill the body directly
            conflict.body.update(
                children=[{"id": cid, "name": cname} for cid, cname in children],
                children_count=len(children),
                message=CONFIRM_MESSAGE,
                status="confirmation_required",
            )
            raise conflict
        all_ids = [ws_id, *descendants]
        await self._mark_removed(all_ids)
        # Detached from the request: a client hanging up must not abort stops half-way (#1843).
        cleanup = self.ctx.tasks.spawn(
            f"delete-{ws_id}", self._cleanup(ws_id, descendants, exists, purge), awaited=True
        )
        failures = await asyncio.shield(cleanup)
        if failures:
            detail = "; ".join(f"stop {wid} failed" for wid in failures)
            raise ApiError(
                500,
                f"workspace marked removed, but {len(failures)} stop call(s) failed — please retry: {detail}",
                removed_count=len(all_ids),
                stop_failures=len(failures),
            )
        if purge:
            try:
                async with self.engine.begin() as conn:
                    await store.purge_workspaces(conn, all_ids)
            except Exception:
                log.exception("purge %s failed", all_ids)
                raise ApiError(500, "purge failed") from None
            return _sorted({"status": "purged", "cascade_deleted": len(descendants)})
        return _sorted({"status": "removed", "cascade_deleted": len(descendants)})

    async def _mark_removed(self, ids: list[str]) -> None:
        """Removed first, before any stop, so late heartbeats and sweeps cannot resurrect the rows (#73)."""
        try:
            async with self.engine.begin() as conn:
                for wid in ids:
                    await self.ctx.lifecycle.mark_removed(wid, conn=conn)
                await store.delete_layouts(conn, ids)
                await tokens.revoke_workspace_tokens(conn, ids)
                await store.disable_schedules(conn, ids)
        except Exception:
            log.exception("delete %s: marking removed failed", ids)
            raise ApiError(500, "failed to delete workspace") from None

    async def _cleanup(
        self, root: str, descendants: list[str], root_exists: bool, purge: bool = False
    ) -> list[str]:
        """Stop, clear caches, emit REMOVED: descendants first, then the root. Returns failed-stop ids."""
        deadline = asyncio.get_running_loop().time() + DELETE_CLEANUP_SECONDS
        failures: list[str] = []
        for wid in [*descendants, root]:
            if not await self._stop(wid, deadline, purge):
                failures.append(wid)
            try:
                await clear_workspace_keys(self.ctx.kv, wid)
            except Exception:
                log.exception("delete %s: clearing cache keys failed", wid)
            if wid != root:
                await self.ctx.events.record("WORKSPACE_REMOVED", wid, {})
            elif root_exists:
                await self.ctx.events.record("WORKSPACE_REMOVED", wid, {"cascade_deleted": len(descendants)})
        return failures

    async def _stop(self, ws_id: str, deadline: float, purge: bool = False) -> bool:
        hook = self.provisioner
        if hook is None:
            return True
        try:
            async with asyncio.timeout_at(deadline):
                await hook.stop(ws_id)
        except Exception:
            log.exception("delete %s: stop failed; volume left for the orphan sweeper", ws_id)
            return False
        # purge=true also drops the workspace volume (user data), when the hook can (`purge_volumes`)
        remove_volume = (purge and getattr(hook, "purge_volumes", None)) or getattr(
            hook, "remove_volume", None
        )
        if remove_volume is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await remove_volume(ws_id)
            except Exception:
                log.warning("delete %s: volume removal failed", ws_id, exc_info=True)
        return True

    # ------------------------------------------------------------------ state

    async def state(self, ws_id: str, bearer: str) -> tuple[int, dict[str, Any]]:
        """Agent polling endpoint; once the workspace has live tokens only its own token may ask."""
        try:
            async with self.engine.connect() as conn:
                has_live = await tokens.has_live_token(conn, ws_id)
        except Exception:
            log.exception("state %s: token check failed", ws_id)
            raise ApiError(500, "auth check failed") from None
        if has_live:
            if not bearer:
                raise ApiError(401, "missing workspace auth token")
            try:
                async with self.engine.begin() as conn:
                    owner = await tokens.validate_workspace_token(conn, bearer, ws_id)
            except Exception:
                log.exception("state %s: token validation failed", ws_id)
                raise ApiError(500, "auth check failed") from None
            if owner is None:
                raise ApiError(401, "invalid workspace auth token")
        try:
            async with self.engine.connect() as conn:
                status = await store.workspace_status(conn, ws_id)
        except Exception:
            log.exception("state %s: query failed", ws_id)
            raise ApiError(500, "query failed") from None
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

    # ------------------------------------------------------------------ config

    async def get_config(self, ws_id: str) -> dict[str, Any]:
        try:
            async with self.engine.connect() as conn:
                data = await store.get_config(conn, ws_id)
        except Exception:
            log.exception("config get %s failed", ws_id)
            raise ApiError(500, "query failed") from None
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
        try:
            async with self.engine.connect() as conn:
                row = await store.get_budget(conn, ws_id)
        except Exception:
            log.exception("budget get %s failed", ws_id)
            raise ApiError(500, "query failed") from None
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


# ---------------------------------------------------------------------- helpers


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
    return _sorted(d)


def connection_block(ws_id: str, platform_url: str, token: str) -> dict[str, Any]:
    """The one-time copy-paste block for an external agent (the token is never shown again)."""
    fill = {"{platform_url}": platform_url, "{workspace_id}": ws_id}
    curl, python = CURL_REGISTER_TEMPLATE, PYTHON_SNIPPET_TEMPLATE
    for k, v in fill.items():
        curl, python = curl.replace(k, v), python.replace(k, v)
    return _sorted(
        {
            "workspace_id": ws_id,
            "platform_url": platform_url,
            "auth_token": token,
            "registry_endpoint": platform_url + "/registry/register",
            "heartbeat_endpoint": platform_url + "/registry/heartbeat",
            "curl_register_template": curl,
            "python_snippet": python,
        }
    )


CURL_REGISTER_TEMPLATE = """\
# Register your agent with this workspace. Set the two variables, then run:
export WORKSPACE_AUTH_TOKEN="<auth_token from the create response>"
export AGENT_URL="https://agent.example.com"   # where your agent serves A2A

curl -fsS -X POST "{platform_url}/registry/register" \\
  -H "Authorization: Bearer $WORKSPACE_AUTH_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{"id": "{workspace_id}", "url": "'"$AGENT_URL"'",
       "agent_card": {"name": "External Agent", "version": "0.1.0"}}'

# Keep it online: POST {platform_url}/registry/heartbeat with the same bearer every ~30 s.
"""

PYTHON_SNIPPET_TEMPLATE = """\
# Minimal external agent loop: register once, then heartbeat. Needs `pip install httpx`.
import time

import httpx

PLATFORM_URL = "{platform_url}"
WORKSPACE_ID = "{workspace_id}"
AUTH_TOKEN = "<auth_token from the create response>"
AGENT_URL = "https://agent.example.com"  # where your agent serves A2A

headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
with httpx.Client(base_url=PLATFORM_URL, headers=headers, timeout=10) as client:
    client.post("/registry/register", json={
        "id": WORKSPACE_ID,
        "url": AGENT_URL,
        "agent_card": {"name": "External Agent", "version": "0.1.0"},
    }).raise_for_status()
    while True:
        client.post("/registry/heartbeat", json={"workspace_id": WORKSPACE_ID}).raise_for_status()
        time.sleep(30)
"""
