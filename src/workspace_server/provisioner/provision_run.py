"""One provision run (spec 02 §2): env (secrets → git identity → model → role → mutator chain) → config
source → required_env preflight → token rotation → row still provisioning? → backend.start (3 min) → url
stored + cached. Never raises: every failure ends as provisioning → failed with a user-safe message."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workspace_server import egress
from workspace_server.auth import tokens
from workspace_server.common.kv import URL_TTL, internal_url_key, url_key
from workspace_server.provisioner import config_source as cfg
from workspace_server.provisioner import store as pstore
from workspace_server.provisioner.base import (
    Backend,
    BackendError,
    EngineUnavailable,
    ImageNotFound,
    PullProgress,
    StartSpec,
)
from workspace_server.provisioner.hooks import MutatorError, ProvisionInfo, run_mutators
from workspace_server.provisioner.orchestrator_base import OrchestratorBase
from workspace_server.secrets.service import SecretDecryptError, env_for_workspace
from workspace_server.workspaces import store as ws_store
from workspace_server.workspaces.schemas import ConfigOverlay
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.templates import resolve_template

log = logging.getLogger(__name__)

PROVISION_DEADLINE = 180.0  # the reference's ProvisionTimeout: env, pull and start together
ENGINE_RETRY_SECONDS = 2.0  # a start that found the engine away tries again this often, within the deadline
START_FAILED = "workspace start failed"
MUTATORS_FAILED = "plugin env mutator chain failed"
PROGRESS_EVENT = "WORKSPACE_PROVISION_PROGRESS"
EMAIL_DOMAIN = "agents.moleculesai.app"
_SLUG_RUNS = re.compile(r"[^a-z0-9]+")


class _Abort(Exception):
    """The run ended (row already failed, or moved on); nothing more to report."""


@dataclass
class Job:
    """One provision run. `template_dir` None + `generate` False = reuse what the volume holds."""

    ws_id: str
    name: str
    role: str
    tier: int
    runtime: str
    model: str = ""
    template_dir: Path | None = None
    generate: bool = False
    workspace_dir: str = ""
    workspace_access: str = "none"
    reset_session: bool = False
    live_config: bytes | None = None  # the volume's config.yaml, when read before the stop
    volume_known_empty: bool = False  # the volume was read and has no config.yaml
    overlay: ConfigOverlay | None = None  # org import's files and config.yaml blocks (first start only)


def git_identity(env: dict[str, str], name: str) -> None:
    """`GIT_{AUTHOR,COMMITTER}_{NAME,EMAIL}` for commits by this agent; operator values win."""
    name = name.strip()
    if not name:
        return
    slug = _SLUG_RUNS.sub("-", name.lower()).strip("-") or "workspace"
    for role in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{role}_NAME", f"Molecule AI {name}")
        env.setdefault(f"GIT_{role}_EMAIL", f"{slug}@{EMAIL_DOMAIN}")


def _job_from_row(row: Any, **overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "ws_id": row.id,
        "name": row.name or "",
        "role": row.role or "",
        "tier": int(row.tier or 0),
        "runtime": row.runtime or "langgraph",
        "workspace_dir": row.workspace_dir or "",
        "workspace_access": row.workspace_access or "none",
    }
    fields.update(overrides)
    return Job(**fields)


class ProvisionRun(OrchestratorBase):
    async def _remembered_template(self, ws_id: str) -> Path | None:
        try:
            async with self.engine.connect() as conn:
                data = await ws_store.get_config(conn, ws_id)
        except Exception:
            log.warning("reading workspace_config of %s failed", ws_id, exc_info=True)
            return None
        name = data.get("template") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name:
            return None
        path = resolve_template(self.settings, name)
        return path if path is not None and path.is_dir() else None

    # ------------------------------------------------------------ one provision run

    async def _run(self, job: Job) -> None:
        """Never raises: every failure ends as provisioning → failed with a user-safe message."""
        try:
            await self._start(job)
        except _Abort:
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("provisioning %s failed", job.ws_id)
            await self._fail(job.ws_id, START_FAILED)

    async def _start(self, job: Job) -> None:
        backend = self.backend
        if backend is None:
            raise _Abort
        env, secret_keys = await self._gather_env(job)
        job = await self._resolve_config(job)
        files: dict[str, bytes] = {}
        if job.generate:
            files["config.yaml"] = cfg.default_config_yaml(
                job.name, job.role, job.tier, job.runtime, job.model, self.images
            )
        if job.overlay is not None:
            files = await asyncio.to_thread(self._with_overlay, job, job.overlay, files)
        await self._preflight(job, files, env)
        await self._still_provisioning(job.ws_id)  # deleted or paused meanwhile: no token, no start
        token = await self._rotate_token(job.ws_id)
        if token:
            files[".auth_token"] = token.encode()
        spec = StartSpec(
            workspace_id=job.ws_id,
            image=self.images.image_for(job.runtime),
            runtime=job.runtime,
            tier=job.tier,
            env=env,
            secret_keys=secret_keys,
            config_files=files,
            template_dir=job.template_dir,
            workspace_path=job.workspace_dir or self.settings.WORKSPACE_DIR,
            workspace_access=job.workspace_access,  # type: ignore[arg-type]  # checked by the backend
            platform_url=self.platform_url(job.tier),
            awareness_namespace=f"workspace:{job.ws_id}",
            reset_session=job.reset_session,
            on_pull_progress=self._progress_sink(job.ws_id),
        )
        await self._start_instance(backend, job, spec)
        if token:
            await self._revoke_older_tokens(job.ws_id, token)

    def _with_overlay(self, job: Job, overlay: ConfigOverlay, files: dict[str, bytes]) -> dict[str, bytes]:
        """The overlay's files on top of the template, and its YAML appended to the config.yaml in effect:
        the overlay's own (a files_dir), else the generated one, else the template's, else a generated
        default (a template without config.yaml)."""
        out = {**files, **overlay.files}
        if not overlay.config_append:
            return out
        base = overlay.files.get("config.yaml") or files.get("config.yaml")
        if base is None and job.template_dir is not None:
            base = cfg.template_config(job.template_dir)
        if base is None:
            base = cfg.default_config_yaml(job.name, job.role, job.tier, job.runtime, job.model, self.images)
        merged = cfg.append_yaml(base, overlay.config_append)
        if merged is None:  # a flow-style or broken config.yaml: keep it as the template wrote it
            log.warning("workspace %s: config.yaml blocks not appended (not a block mapping)", job.ws_id)
            merged = base
        out["config.yaml"] = merged
        return out

    async def _gather_env(self, job: Job) -> tuple[dict[str, str], frozenset[str]]:
        """The env, and which of its keys hold the secret store's values (StartSpec.secret_keys)."""
        try:
            env = await env_for_workspace(self.engine, self.settings, job.ws_id)
        except SecretDecryptError as exc:
            log.error("workspace %s: cannot decrypt %s secrets %s", job.ws_id, exc.scope, exc.keys)
            await self._fail(job.ws_id, str(exc))
            raise _Abort from None
        secret_keys = frozenset(env)
        git_identity(env, job.name)
        model = job.model or env.get("MODEL_PROVIDER", "")
        if job.runtime == "hermes" and model:
            env["HERMES_DEFAULT_MODEL"] = model
        if job.role:
            env["MOLECULE_AGENT_ROLE"] = job.role
        info = ProvisionInfo(name=job.name, role=job.role or None, runtime=job.runtime, tier=job.tier)
        try:
            await run_mutators(self.mutators, job.ws_id, env, info)
        except MutatorError as exc:
            log.error("workspace %s: %s", job.ws_id, type(exc.cause).__name__)  # never the env
            await self._fail(job.ws_id, MUTATORS_FAILED)
            raise _Abort from None
        return env, secret_keys & env.keys()

    async def _resolve_config(self, job: Job) -> Job:
        """Config-source guard: a reuse of a volume known to hold no config.yaml gets one (#17, #1858)."""
        if job.template_dir is not None or job.generate or not job.volume_known_empty:
            return job
        fallback = await self._remembered_template(job.ws_id)
        if fallback is None:
            fallback = await asyncio.to_thread(cfg.runtime_fallback, self.settings, job.runtime, self.images)
        if fallback is not None:
            log.info("workspace %s: empty config volume, using template %s", job.ws_id, fallback.name)
            return replace(job, template_dir=fallback)
        log.info("workspace %s: empty config volume, writing the default config", job.ws_id)
        return replace(job, generate=True)

    async def _preflight(self, job: Job, files: dict[str, bytes], env: dict[str, str]) -> None:
        """`runtime_config.required_env` of the config that will be in effect, checked before start."""
        config = files.get("config.yaml")
        if config is None and job.template_dir is not None:
            config = await asyncio.to_thread(cfg.template_config, job.template_dir)
        if config is None:
            config = job.live_config
        missing = cfg.missing_env(config, env)
        if missing:
            await self._fail(job.ws_id, cfg.missing_env_message(missing), missing=missing)
            raise _Abort

    async def _rotate_token(self, ws_id: str) -> str | None:
        """Issue the token the agent will read (#418, #1877); the older ones are revoked only once the
        start succeeded (`_revoke_older_tokens`).

        SaaS mode in the open bootstrap mode revokes every token and issues none, as the reference (the
        runtime's first register mints one); in production mode a register never mints for an
        unauthenticated caller, so the token is always issued and written (issue 11 §1).

        A start that fails (the engine away, a restart cut short) thus leaves the token already on the
        volume working: a container the engine brings back by itself can still register. And if issuing
        fails, nothing was revoked either.
        """
        try:
            async with self.engine.begin() as conn:
                if self.settings.saas_mode and self.settings.open_bootstrap:
                    await tokens.revoke_workspace_tokens(conn, [ws_id])
                    return None
                return await tokens.issue_workspace_token(conn, ws_id)
        except Exception:
            log.exception("workspace %s: token rotation failed; no token injected", ws_id)
            return None

    async def _revoke_older_tokens(self, ws_id: str, token: str) -> None:
        try:
            async with self.engine.begin() as conn:
                await pstore.revoke_tokens_except(conn, ws_id, tokens.hash_token(token))
        except Exception:
            log.exception("workspace %s: revoking the tokens before this start failed", ws_id)

    async def _still_provisioning(self, ws_id: str) -> None:
        async with self.engine.connect() as conn:
            status = await ws_store.workspace_status(conn, ws_id)
        if status != Status.PROVISIONING:
            log.info("workspace %s is %s now; not starting it", ws_id, status)
            raise _Abort

    def _progress_sink(self, ws_id: str) -> Any:
        def sink(ev: PullProgress) -> None:
            log.info("workspace %s: pull %s %s %s", ws_id, ev.image, ev.layer, ev.status)
            payload = {
                "image": ev.image,
                "status": ev.status,
                "layer": ev.layer,
                "current": ev.current,
                "total": ev.total,
            }
            self.spawn(self.ctx.events.broadcast(PROGRESS_EVENT, ws_id, payload), f"progress-{ws_id}")

        return sink

    async def _start_instance(self, backend: Backend, job: Job, spec: StartSpec) -> None:
        try:
            async with asyncio.timeout(PROVISION_DEADLINE):
                started = await self._start_when_engine_answers(backend, job, spec)
        except ImageNotFound as exc:
            # DECIDE: the one backend message users see verbatim — it names the image and what to check
            log.warning("workspace %s: %s (%s)", job.ws_id, exc.message, exc.detail)
            await self._fail(job.ws_id, exc.message)
            raise _Abort from None
        except BackendError as exc:
            log.warning("workspace %s: start failed: %s (%s)", job.ws_id, exc.message, exc.detail)
            await self._fail(job.ws_id, START_FAILED)
            raise _Abort from None
        except TimeoutError:
            log.warning("workspace %s: start did not finish within %.0fs", job.ws_id, PROVISION_DEADLINE)
            await self._stop_quietly(job.ws_id)
            await self._fail(job.ws_id, START_FAILED)
            raise _Abort from None
        await self._record_started(job, started.url)

    async def _start_when_engine_answers(self, backend: Backend, job: Job, spec: StartSpec) -> Any:
        """`backend.start`, tried again while the engine does not answer at all (a Docker daemon
        restarting: the health sweep may restart a workspace whose container the daemon just stopped on
        its way down). The caller's deadline bounds the wait; a row that moved on ends it."""
        waited = False
        while True:
            try:
                return await backend.start(spec)
            except EngineUnavailable as exc:
                if not waited:
                    log.warning("workspace %s: engine unreachable (%s); retrying", job.ws_id, exc.detail)
                waited = True
            await asyncio.sleep(ENGINE_RETRY_SECONDS)
            await self._still_provisioning(job.ws_id)

    async def _record_started(self, job: Job, url: str) -> None:
        async with self.engine.begin() as conn:
            stored = await pstore.set_url_if_live(conn, job.ws_id, url)
        if not stored:
            # paused, hibernated, removed or failed while we were starting: do not leave it running
            await self._stop_quietly(job.ws_id)
            async with self.engine.connect() as conn:
                status = await ws_store.workspace_status(conn, job.ws_id)
            if status in (None, Status.REMOVED) and self.backend is not None:
                try:
                    await self.backend.remove_volumes(job.ws_id)
                except Exception:
                    log.warning("removing volumes of deleted %s failed", job.ws_id, exc_info=True)
            log.info("workspace %s moved on during start (%s); instance stopped", job.ws_id, status)
            return
        # server-side record of where this agent lives: the egress policy trusts this URL for this
        # workspace, whatever range it is in (egress.Assigned), and nothing an agent sends
        egress.assigned(self.ctx).record(job.ws_id, url)
        await self._cache_urls(job.ws_id, url, job.tier)
        log.info("workspace %s started at %s; waiting for it to register", job.ws_id, url)

    async def _cache_urls(self, ws_id: str, url: str, tier: int) -> None:
        """The agent's url and its in-network twin, as register caches them (best effort)."""
        try:
            await self.ctx.kv.set(url_key(ws_id), url, URL_TTL)
            await self.ctx.kv.set(internal_url_key(ws_id), self._internal_url(ws_id, url, tier), URL_TTL)
        except Exception:
            log.warning("caching urls of %s failed", ws_id, exc_info=True)
