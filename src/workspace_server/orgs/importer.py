"""The org import walk (spec 06 §3.5 steps 3–10).

Each node becomes a workspace through the ordinary create path (`WorkspaceService.create`), exactly as
team expand does, so it gets what any workspace gets: name/field checks, the `workspace_dir` check, its
secrets encrypted with the real encryption version, a confined template, provisioning by whatever backend
is configured (process or Docker; the reference provisioned only with Docker and slept 2 s per child
inside the request). The node's config (files_dir, system prompt, config.yaml blocks, plugins) rides on
that create as a `ConfigOverlay` for the first start (`node_config.py`), so it is applied by the
process and Docker backends alike. Then the org-only additions: initial memories, template schedules, and
channels (`node_channels.py`, through the channels service, encrypted). The first node that fails stops
the walk; nodes already created stay and the answer is a 207.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.config import process_environ
from workspace_server.context import AppContext
from workspace_server.db.engine import dialect_insert
from workspace_server.db.schema import MEMORY_SCOPES, workspace_schedules
from workspace_server.memories import store as memory_store
from workspace_server.memories.service import stored_content
from workspace_server.orgs import layout, node_channels, node_config
from workspace_server.orgs.models import MemorySeed, Node, Schedule
from workspace_server.orgs.service import LoadedOrg
from workspace_server.orgs.sources import expand_vars, files_dir, read_dotenv, read_side_file
from workspace_server.provisioner.config_source import CLAUDE_CODE_MODEL, DEFAULT_MODEL
from workspace_server.schedules import cron
from workspace_server.workspaces.schemas import CanvasPos, CreateWorkspace
from workspace_server.workspaces.service import WorkspaceService, truncate_utf8
from workspace_server.workspaces.templates import resolve_template

log = logging.getLogger(__name__)
Point = tuple[float, float]

MEMORY_MAX_BYTES = 100_000
EXTERNAL = "external workspace: the server writes no config for it"
NO_BACKEND = "no workspace backend: nothing is started, so no config is written"


@dataclass
class _Walk:
    loaded: LoadedOrg
    platform_url: str
    org_env: dict[str, str]
    stage: node_config.Stager
    results: list[dict[str, Any]] = field(default_factory=list)


class NodeFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OrgImporter:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.svc = WorkspaceService(ctx)

    async def run(self, loaded: LoadedOrg, platform_url: str) -> tuple[int, dict[str, Any]]:
        root = loaded.root
        org_env = await asyncio.to_thread(read_dotenv, root, root) if root is not None else {}
        walk = _Walk(loaded, platform_url, org_env, node_config.stager(self.ctx))
        error = ""
        try:
            for node in loaded.template.workspaces:
                x, y = node.canvas.x, node.canvas.y
                await self._tree(walk, node, None, (x, y), (x, y))
        except NodeFailed as exc:
            error = exc.message
        if walk.results and loaded.template.global_memories:
            await self._seed_memories(walk.results[0]["id"], loaded.template.global_memories, "GLOBAL")
        body: dict[str, Any] = {
            "count": len(walk.results),
            "org": loaded.template.name,
            "workspaces": walk.results,
        }
        log.info("org import %r: %d workspaces created", loaded.template.name, len(walk.results))
        if error:
            body["error"] = error
            return 207, body
        return 201, body

    async def _tree(self, walk: _Walk, node: Node, parent_id: str | None, pos: Point, rel: Point) -> None:
        """`pos` is absolute (stored in canvas_layouts, as the reference); `rel` is relative to the parent
        (a root's is its absolute), sent in WORKSPACE_PROVISIONING: React Flow places a node with a
        parent at parent-relative coordinates, so the canvas nests children live."""
        ws_id = await self._node(walk, node, parent_id, pos, rel)
        sizes = [layout.subtree_size(c) for c in node.children]
        for child, (dx, dy) in zip(node.children, layout.child_slots(sizes), strict=True):
            await self._tree(walk, child, ws_id, (pos[0] + dx, pos[1] + dy), (dx, dy))

    async def _node(self, walk: _Walk, node: Node, parent_id: str | None, pos: Point, rel: Point) -> str:
        defaults = walk.loaded.template.defaults
        root = walk.loaded.root
        node_dir = files_dir(root, node.files_dir) if root is not None and node.files_dir else None
        node_env = await asyncio.to_thread(read_dotenv, root, node_dir) if root and node_dir else {}
        runtime = node.runtime or defaults.runtime or "langgraph"
        tier = node.tier or defaults.tier or 2
        try:
            payload = self._payload(walk, node, parent_id, pos, runtime, tier, node_env)
        except ValidationError:  # e.g. a tier beyond int32 or a non-finite position
            raise NodeFailed(f"failed to create workspace {node.name!r}: invalid workspace fields") from None
        cfg = await self._node_config(walk, node, node_dir, external=node.external or runtime == "external")
        event_extra: dict[str, Any] = {"x": rel[0], "y": rel[1]}
        if parent_id is not None:
            event_extra["parent_id"] = parent_id
        try:
            created = await self.svc.create(
                payload, walk.platform_url, event_extra=event_extra, overlay=cfg.overlay
            )
        except ApiError as exc:
            reason = exc.body.get("error") or "failed to create workspace"
            raise NodeFailed(f"failed to create workspace {node.name!r}: {reason}") from None
        ws_id = str(created["id"])
        await self._seed_memories(ws_id, node.initial_memories or defaults.initial_memories, None)
        base = node_dir or root
        await self._schedules(ws_id, node.schedules, root, base)
        entry = {"id": ws_id, "name": node.name, "tier": tier, **node_config.result_fields(cfg)}
        envs = (walk.org_env, node_env, process_environ())
        entry.update(await node_channels.apply(self.ctx, ws_id, node, *envs))
        entry = dict(sorted(entry.items()))
        if "connection" in created:  # an external node's token, minted at create and shown only here
            entry = dict(sorted({**entry, "connection": created["connection"]}.items()))
        walk.results.append(entry)
        return ws_id

    def _payload(
        self,
        walk: _Walk,
        node: Node,
        parent_id: str | None,
        pos: tuple[float, float],
        runtime: str,
        tier: int,
        node_env: dict[str, str],
    ) -> CreateWorkspace:
        defaults = walk.loaded.template.defaults
        return CreateWorkspace(
            name=node.name,
            role=node.role or None,
            template=self._template(node.template),
            tier=tier,
            model=node.model or defaults.model or _default_model(runtime),
            runtime=runtime,
            external=node.external or None,
            url=node.url or None,
            workspace_dir=self._workspace_dir(node, walk.org_env, node_env) or None,
            workspace_access=node.workspace_access or None,
            parent_id=parent_id,
            secrets={**walk.org_env, **node_env} or None,
            max_concurrent_tasks=node.max_concurrent_tasks if node.max_concurrent_tasks > 0 else 1,
            canvas=CanvasPos(x=pos[0], y=pos[1]),
        )

    def _template(self, name: str) -> str | None:
        """The node's template when it is a directory inside CONFIGS_DIR; else None (runtime default)."""
        if not name:
            return None
        path = resolve_template(self.ctx.settings, name)
        return name if path is not None and path.is_dir() else None

    @staticmethod
    def _workspace_dir(node: Node, org_env: dict[str, str], node_env: dict[str, str]) -> str:
        """`${VAR}` expanded from the org `.env`, the node `.env`, then the server's environment; the
        create path then refuses relative paths, `..` and system directories."""
        if not node.workspace_dir:
            return ""
        return expand_vars(node.workspace_dir, org_env, node_env, process_environ())

    async def _node_config(
        self, walk: _Walk, node: Node, node_dir: Path | None, *, external: bool
    ) -> node_config.NodeConfig:
        defaults = walk.loaded.template.defaults
        if external:  # as the create path decides it: the flag, or runtime `external`
            return node_config.skip_all(node, defaults, EXTERNAL)
        if self.svc.provisioner is None:
            return node_config.skip_all(node, defaults, NO_BACKEND)
        return await node_config.build(self.ctx, node, defaults, walk.loaded.root, node_dir, walk.stage)

    # ------------------------------------------------------------ memories

    async def _seed_memories(self, ws_id: str, seeds: list[MemorySeed], force_scope: str | None) -> None:
        """Initial memories (scope upper-cased, default LOCAL, invalid skipped, ≤100,000 bytes, redacted,
        namespace `workspace:<id>`); GLOBAL for the org's `global_memories`. Best effort."""
        rows = []
        for seed in seeds:
            scope = force_scope or (seed.scope.upper() or "LOCAL")
            if scope not in MEMORY_SCOPES or not seed.content or "\x00" in seed.content:
                continue
            content = stored_content(ws_id, truncate_utf8(seed.content, MEMORY_MAX_BYTES), scope)
            rows.append((content, scope))
        if not rows:
            return
        try:
            async with self.ctx.engine.begin() as conn:
                for content, scope in rows:
                    await memory_store.insert_memory(
                        conn, workspace_id=ws_id, content=content, scope=scope, namespace=f"workspace:{ws_id}"
                    )
        except Exception:
            log.exception("org import %s: seeding memories failed", ws_id)

    # ------------------------------------------------------------ schedules

    async def _schedules(
        self, ws_id: str, schedules: list[Schedule], root: Path | None, base: Path | None
    ) -> None:
        for sched in schedules:
            values = await asyncio.to_thread(_schedule_values, sched, root, base)
            if values is None:
                log.warning("org import %s: schedule %r skipped (no prompt/bad cron)", ws_id, sched.name)
                continue
            try:
                async with self.ctx.engine.begin() as conn:
                    await upsert_template_schedule(conn, ws_id, values)
            except Exception:
                log.exception("org import %s: saving schedule %r failed", ws_id, sched.name)


def _default_model(runtime: str) -> str:
    return CLAUDE_CODE_MODEL if runtime == "claude-code" else DEFAULT_MODEL


def _schedule_values(sched: Schedule, root: Path | None, base: Path | None) -> dict[str, Any] | None:
    prompt = sched.prompt
    if not prompt and sched.prompt_file and root is not None and base is not None:
        prompt = read_side_file(root, base, sched.prompt_file) or ""
    tz = sched.timezone or "UTC"
    if not prompt.strip() or any("\x00" in v for v in (prompt, sched.name, sched.cron_expr, tz)):
        return None
    try:
        next_run = cron.next_fire(sched.cron_expr, tz, utcnow())
    except (cron.CronError, ValueError):
        return None
    return {
        "name": sched.name,
        "cron_expr": sched.cron_expr,
        "timezone": tz,
        "prompt": prompt,
        "enabled": sched.enabled,
        "next_run_at": next_run,
    }


async def upsert_template_schedule(conn: Any, ws_id: str, values: dict[str, Any]) -> None:
    """Insert with source `template`; on (workspace_id, name) refresh only a row that is itself a
    template row (a schedule the agent or a user added at runtime is never overwritten); never delete."""
    s = workspace_schedules
    now = utcnow()
    stmt = dialect_insert(conn, s).values(
        id=new_id(), workspace_id=ws_id, source="template", created_at=now, updated_at=now, **values
    )
    refreshed = {k: stmt.excluded[k] for k in ("cron_expr", "timezone", "prompt", "enabled", "next_run_at")}
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[s.c.workspace_id, s.c.name],
            set_={**refreshed, "updated_at": now},
            where=s.c.source == sa.literal("template"),
        )
    )
