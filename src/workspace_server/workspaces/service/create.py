"""Create: validate, insert the row with its secrets, then hand it to the provisioner (or finish an external
workspace here, with its one-time connection block)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from workspace_server.activity.service import sorted_keys
from workspace_server.auth import tokens
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id, parse_uuid
from workspace_server.common.jsonnum import storable_json
from workspace_server.common.kv import URL_TTL, url_key
from workspace_server.secrets.crypto import crypto_for
from workspace_server.workspaces import store
from workspace_server.workspaces.schemas import (
    ConfigOverlay,
    CreateWorkspace,
    ProvisionSpec,
    workspace_access_ok,
    workspace_dir_ok,
    workspace_fields_error,
)
from workspace_server.workspaces.service.base import ProvisionerHook, ServiceBase
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.templates import (
    read_template_runtime_and_model,
    resolve_template,
    runtime_default_dir,
)

# The public face's logger name, for every part: log configuration and filters keep seeing one service.
log = logging.getLogger(__package__)

NO_BACKEND_REASON = (
    "Docker not available — no workspace backend is configured on this server (WORKSPACE_BACKEND=none), "
    "so nothing was started. Run the agent yourself; its first POST /registry/register brings this "
    "workspace online."
)
NO_BACKEND_EVENT_ERROR = "Docker not available on this platform instance (no workspace backend configured)"


class CreateOps(ServiceBase):
    async def create(
        self,
        p: CreateWorkspace,
        platform_url: str,
        *,
        event_extra: dict[str, Any] | None = None,
        overlay: ConfigOverlay | None = None,
    ) -> dict[str, Any]:
        """`event_extra` joins the WORKSPACE_PROVISIONING payload (org import's x, y, parent_id) and
        `overlay` the first start's config: both server-side only, never taken from a request body."""
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
        provisioning = {**(event_extra or {}), "name": name, "tier": tier, "runtime": runtime}
        await self.ctx.events.record("WORKSPACE_PROVISIONING", ws_id, provisioning)

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
            overlay=overlay,
        )
        hook = self.provisioner
        if hook is not None:
            self.ctx.tasks.spawn(f"provision-{ws_id}", self.run_provision(hook, spec))
        else:
            await self.fail_without_backend(ws_id, name, runtime, tier, template)
        return sorted_keys(
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
            return sorted_keys(body)

        await lc.transition(
            ws_id, to=Status.AWAITING_AGENT, expect=[Status.PROVISIONING], values={"runtime": "external"}
        )
        await self.ctx.events.record("WORKSPACE_AWAITING_AGENT", ws_id, payload)
        return sorted_keys(
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


def connection_block(ws_id: str, platform_url: str, token: str) -> dict[str, Any]:
    """The one-time copy-paste block for an external agent (the token is never shown again)."""
    fill = {"{platform_url}": platform_url, "{workspace_id}": ws_id}
    curl, python = CURL_REGISTER_TEMPLATE, PYTHON_SNIPPET_TEMPLATE
    for k, v in fill.items():
        curl, python = curl.replace(k, v), python.replace(k, v)
    return sorted_keys(
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
# Register your agent with this workspace. Set the two variables, then run.
# (The canvas fills the token in by replacing the exact WORKSPACE_AUTH_TOKEN line below.)
export WORKSPACE_AUTH_TOKEN="<paste from create response>"
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

# The canvas fills AUTH_TOKEN in by replacing this exact line (its spacing included).
PLATFORM_URL  = "{platform_url}"
WORKSPACE_ID  = "{workspace_id}"
AUTH_TOKEN    = "<paste from create response>"
AGENT_URL     = "https://agent.example.com"  # where your agent serves A2A

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
