"""The orchestrator: turns workspace rows into running agents and back (spec 01 §4.2–4.4, 02 §1–2).

It owns the status moves of the provisioning life cycle and calls the backend, which knows nothing of
the database (DESIGN §7). One provision run:

    env (secrets → git identity → model → role → mutator chain) → config source → required_env
    preflight → token rotation → row still provisioning? → backend.start (3 min) → url stored + cached

The row goes `online` only when the agent registers. Every failure moves provisioning → failed with a
message safe to show (F1086) and `WORKSPACE_PROVISION_FAILED`.

Serialisation: one lock per workspace covers stop + start, so two starts never race for one
workspace. `restart_by_id` (auto-restart, wake, secret change) queues at most one restart behind a
running one instead of dropping it. Pause/hibernate/delete do not take the lock (they must not wait
for a 3-minute start); they change the status first and stop after, and a start that finishes later
sees the row moved on and stops its own instance.

Set on the context by the composition root (app.py) as `ctx.orchestrator` (always), and — only with a
backend — as `ctx.provisioner` (the workspaces service's `ProvisionerHook`) and `ctx.restart_hook`
(= `restart_by_id`). Its background work runs on the app's task supervisor (`ctx.tasks`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from workspace_server import egress
from workspace_server.auth import tokens
from workspace_server.common.errors import ApiError
from workspace_server.common.kv import URL_TTL, clear_workspace_keys, internal_url_key, url_key
from workspace_server.context import AppContext
from workspace_server.provisioner import config_source as cfg
from workspace_server.provisioner import restart_context
from workspace_server.provisioner import store as pstore
from workspace_server.provisioner.base import (
    Backend,
    BackendError,
    EngineUnavailable,
    ImageNotFound,
    InstanceNotRunning,
    PullProgress,
    StartSpec,
    instance_name,
)
from workspace_server.provisioner.hooks import MutatorError, MutatorRegistry, ProvisionInfo, run_mutators
from workspace_server.provisioner.runtimes import RuntimeImages
from workspace_server.provisioner.tiers import tier_limits
from workspace_server.secrets.service import SecretDecryptError, env_for_workspace
from workspace_server.workspaces import store as ws_store
from workspace_server.workspaces.files import UnsafePath, read_file, workspace_config_dir
from workspace_server.workspaces.schemas import ProvisionSpec
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.templates import resolve_template

log = logging.getLogger(__name__)

TASKS_GROUP = "orchestrator"  # the task supervisor group of its background work
PROVISION_DEADLINE = 180.0  # the reference's ProvisionTimeout: env, pull and start together
PROBE_SECONDS = 10.0
ENGINE_RETRY_SECONDS = 2.0  # a start that found the engine away tries again this often, within the deadline
START_FAILED = "workspace start failed"
MUTATORS_FAILED = "plugin env mutator chain failed"
PROGRESS_EVENT = "WORKSPACE_PROVISION_PROGRESS"
NOT_PAUSABLE = "workspace not found or already paused"
NOT_PAUSED = "workspace not found or not paused"
NOT_HIBERNATABLE = "workspace not found or not in a hibernatable state (must be online or degraded)"
NO_PROVISIONER = "provisioner not available"
EXTERNAL_RESTART = "external workspaces run outside this server — restart the agent itself"
EMAIL_DOMAIN = "agents.moleculesai.app"
# statuses a restart may not take a row out of (hibernated is allowed: that is the wake)
NO_AUTO_RESTART = (Status.REMOVED, Status.PAUSED, Status.HIBERNATING)
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


@dataclass(frozen=True)
class LiveConfig:
    known: bool  # False: could not look (instance not running, probe error)
    content: bytes | None  # None: no config.yaml (when known)


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


class Orchestrator:
    def __init__(
        self, ctx: AppContext, backend: Backend | None, mutators: MutatorRegistry | None = None
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.engine = ctx.engine
        self.backend = backend
        self.mutators = mutators
        self.images = RuntimeImages.from_settings(ctx.settings)
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: set[str] = set()  # workspaces with a restart_by_id waiting for the lock

    # ------------------------------------------------------------ plumbing

    def _lock(self, ws_id: str) -> asyncio.Lock:
        return self._locks.setdefault(ws_id, asyncio.Lock())

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Background work on the app's task supervisor (drained, then cancelled, at shutdown)."""
        return self.ctx.tasks.spawn(name, self._logged(coro, name), group=TASKS_GROUP)

    @staticmethod
    async def _logged(coro: Coroutine[Any, Any, Any], name: str) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed", name)
            return None

    async def close(self) -> None:
        """Stop this orchestrator's background work now (the app's shutdown drains it first)."""
        await self.ctx.tasks.cancel(TASKS_GROUP)

    def _require_backend(self) -> Backend:
        if self.backend is None:
            raise ApiError(503, NO_PROVISIONER)
        return self.backend

    async def _row(self, ws_id: str) -> Any | None:
        try:
            async with self.engine.connect() as conn:
                return await ws_store.get_workspace(conn, ws_id)
        except Exception:
            log.exception("lookup of workspace %s failed", ws_id)
            raise ApiError(500, "lookup failed") from None

    async def _paused_ancestor(self, ws_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return await pstore.paused_ancestor(conn, ws_id)

    async def _fail(self, ws_id: str, message: str, **extra: Any) -> None:
        await self.ctx.lifecycle.mark_failed(ws_id, message, {"error": message, **extra})

    async def _clear_keys(self, ws_id: str) -> None:
        try:
            await clear_workspace_keys(self.ctx.kv, ws_id)
        except Exception:
            log.warning("clearing cache keys of %s failed", ws_id, exc_info=True)

    async def _stop_quietly(self, ws_id: str) -> bool:
        if self.backend is None:
            return True
        try:
            await self.backend.stop(ws_id)
        except Exception:
            log.warning("stop of %s failed; continuing", ws_id, exc_info=True)
            return False
        return True

    def platform_url(self, tier: int) -> str:
        """Where the agent reaches this server (DECIDE, docs/decisions.md § Orchestrator).

        PLATFORM_URL when set; else loopback for agents that share the host's network (process backend,
        docker host networking, T4 host networking), else `host.docker.internal` (bridge containers).
        """
        s = self.settings
        if s.PLATFORM_URL:
            return s.PLATFORM_URL.rstrip("/")
        backend = self.backend.name if self.backend is not None else ""
        host_net = s.docker_host_network or tier_limits(s, tier).host_network
        if backend == "process" or (backend == "docker" and host_net):
            host = s.HOST if s.HOST not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
            host = f"[{host}]" if ":" in host and not host.startswith("[") else host
            return f"http://{host}:{s.PORT}"
        return f"http://host.docker.internal:{s.PORT}"

    def _internal_url(self, ws_id: str, started_url: str, tier: int) -> str:
        """What peers on the agents' network dial: the container name in bridge mode, else the host url."""
        s = self.settings
        if self.backend is not None and self.backend.name == "docker":
            if not s.docker_host_network and not tier_limits(s, tier).host_network:
                return f"http://{instance_name(ws_id)}:8000"
        return started_url

    # ------------------------------------------------------------ ProvisionerHook (workspaces service)

    async def provision(self, spec: ProvisionSpec) -> None:
        """Create path: the row is `provisioning`; start it from the template or a generated config."""
        job = Job(
            ws_id=spec.workspace_id,
            name=spec.name,
            role=spec.role,
            tier=spec.tier,
            runtime=spec.runtime,
            model=spec.model,
            template_dir=spec.template_path,
            generate=spec.template_path is None,
            workspace_dir=spec.workspace_dir,
            workspace_access=spec.workspace_access,
        )
        if spec.template:
            await self._remember_template(spec.workspace_id, spec.template)
        async with self._lock(job.ws_id):
            await self._run(job)

    async def _remember_template(self, ws_id: str, template: str) -> None:
        """`workspace_config.template` (as the no-backend create writes it): an empty volume's recovery
        source, so a create that failed before its first start still gets its template later."""
        lock = self.ctx.workspace_config_lock
        try:
            async with lock, self.engine.begin() as conn:
                await ws_store.merge_config(conn, ws_id, {"template": template})
        except Exception:
            log.warning("recording the template of %s failed", ws_id, exc_info=True)

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

    async def stop(self, ws_id: str) -> None:
        """Delete path: raises when the instance may still be alive (the caller keeps its volumes)."""
        if self.backend is not None:
            await self.backend.stop(ws_id)

    async def remove_volume(self, ws_id: str) -> None:
        if self.backend is not None:
            await self.backend.remove_volumes(ws_id)

    async def purge_volumes(self, ws_id: str) -> None:
        """`purge=true`: the workspace volume goes too (a plain delete keeps the user's data)."""
        if self.backend is not None:
            await self.backend.remove_volumes(ws_id, workspace=True)

    async def is_running(self, ws_id: str) -> bool:
        """For the A2A proxy: a backend error counts as running (a False triggers a restart)."""
        if self.backend is None:
            return True
        try:
            return await self.backend.is_running(ws_id)
        except Exception:
            log.warning("is_running(%s) failed; assuming running", ws_id, exc_info=True)
            return True

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
        env = await self._gather_env(job)
        job = await self._resolve_config(job)
        files: dict[str, bytes] = {}
        if job.generate:
            files["config.yaml"] = cfg.default_config_yaml(
                job.name, job.role, job.tier, job.runtime, job.model, self.images
            )
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

    async def _gather_env(self, job: Job) -> dict[str, str]:
        try:
            env = await env_for_workspace(self.engine, self.settings, job.ws_id)
        except SecretDecryptError as exc:
            log.error("workspace %s: cannot decrypt %s secrets %s", job.ws_id, exc.scope, exc.keys)
            await self._fail(job.ws_id, str(exc))
            raise _Abort from None
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
        return env

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

    # ------------------------------------------------------------ start-up adoption

    async def adopt_instances(self) -> list[str]:
        """A live or provisioning row whose instance runs but whose url is not the one our backend
        assigned gets the url back from the instance: the server that started it died between the start
        and the write (run once at start-up), or a restart cleared the url while the engine was away and
        the engine then revived the old container by itself (every health sweep pass). Without it the
        agent registers its own loopback url, which the A2A proxy refuses (only a url our backend
        assigned is trusted), so the workspace is online but unreachable. Returns the ids adopted.
        Backends without `instance_url` (process: it adopts its agents by pidfile) skip it."""
        locate = getattr(self.backend, "instance_url", None)
        if locate is None:
            return []
        async with self.engine.connect() as conn:
            rows = await pstore.rows_without_backend_url(conn)
        adopted: list[str] = []
        for row in rows:
            try:
                url = await locate(row.id)
            except Exception:
                log.warning("adoption: inspecting the instance of %s failed", row.id, exc_info=True)
                continue
            if not url:
                continue
            async with self.engine.begin() as conn:
                if not await pstore.adopt_url(conn, row.id, url):
                    continue
            await self._cache_urls(row.id, url, int(getattr(row, "tier", 0) or 0))
            log.info("adoption: workspace %s runs at %s (its start was not recorded)", row.id, url)
            adopted.append(row.id)
        return adopted

    # ------------------------------------------------------------ live config

    async def read_live_config(self, ws_id: str) -> LiveConfig:
        """The volume's config.yaml, read before a stop (docker: from the running container)."""
        backend = self.backend
        if backend is None:
            return LiveConfig(False, None)
        if backend.name == "process":
            try:
                root = workspace_config_dir(self.settings, ws_id)
            except UnsafePath:
                return LiveConfig(False, None)
            data = await asyncio.to_thread(read_file, root, "config.yaml")
            return LiveConfig(True, data)
        try:
            with anyio.fail_after(PROBE_SECONDS):
                res = await backend.exec(ws_id, ["cat", "/configs/config.yaml"])
        except InstanceNotRunning:
            # no container to read from; a missing config volume is still a known-empty one
            return LiveConfig(not await self._docker_volume_exists(ws_id), None)
        except (BackendError, TimeoutError):
            log.warning("reading the live config of %s failed", ws_id, exc_info=True)
            return LiveConfig(False, None)
        if res.exit_code == 0:
            return LiveConfig(True, res.stdout)
        return LiveConfig(res.exit_code == 1, None)  # cat: 1 = no such file; 126/127 = no cat

    async def _docker_volume_exists(self, ws_id: str) -> bool:
        """True unless the engine says the configs volume is not there (errors count as present)."""
        import docker.errors

        from workspace_server.provisioner.docker import configs_volume

        client = getattr(self.backend, "client", None)
        if client is None:
            return True
        try:
            await anyio.to_thread.run_sync(client.volumes.get, configs_volume(ws_id))
        except docker.errors.NotFound:
            return False
        except Exception:
            log.warning("inspecting the config volume of %s failed", ws_id, exc_info=True)
        return True

    # ------------------------------------------------------------ restart (route)

    async def restart(self, ws_id: str, body: cfg.RestartBody, reset_query: bool) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status == Status.REMOVED:  # DECIDE: a removed row stays removed (#73)
            raise ApiError(404, "workspace not found")
        parent = await self._paused_ancestor(ws_id)
        if parent is not None:
            raise ApiError(409, f'parent workspace "{parent}" is paused — resume it first')
        self._require_backend()
        if (row.runtime or "") == "external":
            raise ApiError(409, EXTERNAL_RESTART)
        live = await self.read_live_config(ws_id)
        runtime = await self._sync_runtime(row, live)
        template_dir, label = await asyncio.to_thread(
            cfg.resolve_restart_template, self.settings, row.name or "", runtime, body, self.images
        )
        reset = reset_query or body.reset
        snap = await restart_context.snapshot(self.ctx, ws_id, row.last_heartbeat_at)
        await self._to_provisioning(row, runtime, not_in=(Status.REMOVED, Status.HIBERNATING))
        job = _job_from_row(
            row,
            runtime=runtime,
            template_dir=template_dir,
            reset_session=reset,
            live_config=live.content,
            volume_known_empty=live.known and live.content is None,
        )
        self.spawn(self._restart_job(job, snap), f"restart-{ws_id}")
        return {"config_dir": label, "reset_session": reset, "status": "provisioning"}

    async def _sync_runtime(self, row: Any, live: LiveConfig) -> str:
        """The live config's `runtime:` wins over the DB (the Config tab may have changed it)."""
        runtime = row.runtime or "langgraph"
        declared = cfg.declared_runtime(live.content)
        if declared and declared != runtime:
            log.info("workspace %s: runtime %r → %r from its config.yaml", row.id, runtime, declared)
            try:
                async with self.engine.begin() as conn:
                    await pstore.set_runtime(conn, row.id, declared)
            except Exception:
                log.exception("saving the runtime of %s failed", row.id)
            runtime = declared
        return runtime

    async def _to_provisioning(
        self, row: Any, runtime: str, not_in: tuple[str, ...] = NO_AUTO_RESTART
    ) -> bool:
        """The route may take a paused or hibernated row back up; an auto-restart never a paused one."""
        changed = await self.ctx.lifecycle.transition(
            row.id,
            to=Status.PROVISIONING,
            not_in=not_in,
            values={"url": ""},
            event="WORKSPACE_PROVISIONING",
            payload={"name": row.name, "tier": row.tier, "runtime": runtime},
        )
        await self._clear_keys(row.id)
        return changed

    async def _restart_job(self, job: Job, snap: restart_context.RestartSnapshot | None) -> None:
        async with self._lock(job.ws_id):
            await self._stop_quietly(job.ws_id)
            # a run that held the lock before us may have brought the row online meanwhile
            await self.ctx.lifecycle.transition(
                job.ws_id,
                to=Status.PROVISIONING,
                not_in=(*NO_AUTO_RESTART, Status.HIBERNATED, Status.PROVISIONING),
                values={"url": ""},
                event="WORKSPACE_PROVISIONING",
                payload={"name": job.name, "tier": job.tier, "runtime": job.runtime},
            )
            await self._run(job)
        if snap is not None:
            await restart_context.send(self.ctx, job.ws_id, snap)

    # ------------------------------------------------------------ restart_by_id (auto / wake)

    async def restart_by_id(self, ws_id: str) -> None:
        """Auto-restart (offline, secret change) and wake (hibernated): reuse the volume, send context.

        Skips removed, paused and hibernating rows, external runtimes and rows under a paused ancestor.
        DECIDE/BUG fix: hibernated rows are accepted (the reference's query excluded them, so the
        wake on the next A2A call never happened). At most one restart waits behind a running one.
        """
        if self.backend is None or ws_id in self._queued:
            return
        self._queued.add(ws_id)
        try:
            async with self._lock(ws_id):
                self._queued.discard(ws_id)
                snap = await self._restart_locked(ws_id)
        finally:
            self._queued.discard(ws_id)
        if snap is not None:
            await restart_context.send(self.ctx, ws_id, snap)

    async def _restart_locked(self, ws_id: str) -> restart_context.RestartSnapshot | None:
        async with self.engine.connect() as conn:
            row = await ws_store.get_workspace(conn, ws_id)
            paused_parent = await pstore.paused_ancestor(conn, ws_id) if row is not None else None
        if row is None or row.status in NO_AUTO_RESTART or (row.runtime or "") == "external":
            return None
        if paused_parent is not None:
            return None
        log.info("auto-restart of %s (%s, was %s)", ws_id, row.name, row.status)
        live = await self.read_live_config(ws_id)
        snap = await restart_context.snapshot(self.ctx, ws_id, row.last_heartbeat_at)
        await self._stop_quietly(ws_id)
        if not await self._to_provisioning(row, row.runtime or "langgraph"):
            return None  # removed or paused meanwhile
        job = _job_from_row(
            row, live_config=live.content, volume_known_empty=live.known and live.content is None
        )
        await self._run(job)
        return snap

    # ------------------------------------------------------------ pause / resume

    async def pause(self, ws_id: str) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status in (Status.REMOVED, Status.PAUSED):
            raise ApiError(404, NOT_PAUSABLE)
        async with self.engine.connect() as conn:
            below = await pstore.descendants_where(
                conn, ws_id, (Status.REMOVED, Status.PAUSED), include=False
            )
        count = 0
        for wid, name in [(ws_id, row.name), *below]:
            # status first, stop second: a start finishing in between sees `paused` and stops itself
            changed = await self.ctx.lifecycle.transition(
                wid, to=Status.PAUSED, not_in=(Status.REMOVED, Status.PAUSED), values={"url": ""}
            )
            await self._stop_quietly(wid)
            await self._clear_keys(wid)
            if changed:
                count += 1
                await self.ctx.events.record("WORKSPACE_PAUSED", wid, {"name": name})
        return {"paused_count": count, "status": "paused"}

    async def resume(self, ws_id: str) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status != Status.PAUSED:
            raise ApiError(404, NOT_PAUSED)
        self._require_backend()
        parent = await self._paused_ancestor(ws_id)
        if parent is not None:
            raise ApiError(409, f'parent workspace "{parent}" is paused — resume it first')
        async with self.engine.connect() as conn:
            below = await pstore.descendants_where(conn, ws_id, (Status.PAUSED,), include=True)
            rows = [row] + [r for wid, _ in below if (r := await ws_store.get_workspace(conn, wid))]
        count = 0
        for r in rows:
            if (r.runtime or "") == "external":
                # DECIDE: nothing of ours to start; offline until the agent's next heartbeat revives it
                count += await self.ctx.lifecycle.transition(r.id, to=Status.OFFLINE, expect=[Status.PAUSED])
                continue
            changed = await self.ctx.lifecycle.transition(
                r.id,
                to=Status.PROVISIONING,
                expect=[Status.PAUSED],
                event="WORKSPACE_PROVISIONING",
                payload={"name": r.name, "tier": r.tier, "runtime": r.runtime},
            )
            if changed:
                count += 1
                self.spawn(self._resume_job(r), f"resume-{r.id}")
        return {"resumed_count": count, "status": "provisioning"}

    async def _resume_job(self, row: Any) -> None:
        async with self._lock(row.id):
            live = await self.read_live_config(row.id)
            job = _job_from_row(
                row, live_config=live.content, volume_known_empty=live.known and live.content is None
            )
            await self._run(job)

    # ------------------------------------------------------------ hibernate

    async def hibernate(self, ws_id: str, force: bool) -> dict[str, Any]:
        row = await self._row(ws_id)
        if row is None or row.status not in (Status.ONLINE, Status.DEGRADED):
            raise ApiError(404, NOT_HIBERNATABLE)
        if row.active_tasks > 0 and not force:
            raise ApiError(
                409,
                "workspace has active tasks; use ?force=true to terminate them",
                active_tasks=row.active_tasks,
            )
        if row.active_tasks > 0:
            log.warning("force-hibernating %s with %d active tasks", ws_id, row.active_tasks)
        if not await self.hibernate_workspace(ws_id, force=force):
            # BUG fix: the reference answered 200 although its claim changed nothing
            raise ApiError(404, NOT_HIBERNATABLE)
        return {"status": "hibernated"}

    async def hibernate_workspace(
        self, ws_id: str, *, force: bool = False, idle_before: datetime | None = None
    ) -> bool:
        """Atomic claim → stop → hibernated. False when the claim lost (nothing stopped)."""
        async with self.engine.begin() as conn:
            claimed = await pstore.claim_for_hibernation(
                conn, self.ctx.lifecycle, ws_id, force=force, idle_before=idle_before
            )
        if not claimed:
            return False
        if not await self._stop_quietly(ws_id):
            # the instance may still run: give the row back rather than call it hibernated
            await self.ctx.lifecycle.transition(ws_id, to=Status.ONLINE, expect=[Status.HIBERNATING])
            raise ApiError(500, "failed to stop workspace — please retry")
        async with self.engine.connect() as conn:
            row = await ws_store.get_workspace(conn, ws_id)
        await self.ctx.lifecycle.transition(
            ws_id,
            to=Status.HIBERNATED,
            expect=[Status.HIBERNATING],
            values={"url": ""},
            event="WORKSPACE_HIBERNATED",
            payload={"name": row.name if row else ws_id, "tier": row.tier if row else 0},
        )
        await self._clear_keys(ws_id)
        return True
