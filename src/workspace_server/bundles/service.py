"""Bundle export/import (spec 06 §3.4): a workspace tree with its prompt, config and skills as one JSON.

Files live in each workspace's config dir (`workspaces/files.py`). Import validates every skill id and
relative path before creating anything, so a bundle either is refused whole (400) or writes only inside
the new workspaces' config dirs (the reference joined them into `/configs` tar entries unchecked).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.bundles.schemas import MAX_DEPTH, Bundle, nesting_depth
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id, parse_uuid
from workspace_server.common.jsonbody import parse_json
from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.db.schema import workspaces
from workspace_server.workspaces import files as wsfiles
from workspace_server.workspaces.schemas import INT32_MAX, ProvisionSpec
from workspace_server.workspaces.service import WorkspaceService
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.store import get_workspace, insert_workspace
from workspace_server.workspaces.templates import runtime_default_dir, scan_runtime_and_model

log = logging.getLogger(__name__)

NOT_FOUND = "bundle not found"
INVALID = "invalid bundle"
DEFAULT_RUNTIME = "langgraph"
DEFAULT_TIER = 3
SYSTEM_PROMPT, CONFIG_YAML, SKILLS = "system-prompt.md", "config.yaml", "skills"
RECORD_FAILED = "failed to create workspace record"
FILES_FAILED = "failed to write workspace config files"


# ---- import ----


def parse_bundle(raw: bytes) -> Bundle:
    """JSON → validated Bundle, or 400 `invalid bundle` (bad JSON, wrong types, unsafe paths, no name)."""
    data = parse_json(raw, INVALID)
    if not isinstance(data, dict) or nesting_depth(data) > MAX_DEPTH:
        raise ApiError(400, INVALID)
    try:
        bundle = Bundle.model_validate(data)
    except (ValidationError, RecursionError):
        raise ApiError(400, INVALID) from None
    problem = _tree_problem(bundle)
    if problem:
        log.info("bundle import refused: %s", problem)
        raise ApiError(400, INVALID)
    return bundle


def _tree_problem(root: Bundle) -> str | None:
    stack = [root]
    while stack:
        node = stack.pop()
        if not node.name.strip():
            return "a workspace without a name"
        if not -INT32_MAX - 1 <= node.tier <= INT32_MAX:
            return "tier out of range"
        if any("\x00" in v for v in (node.name, node.description, node.id, bundle_runtime(node))):
            return "NUL in a stored field"  # Postgres TEXT cannot hold it; SQLite would, so refuse both
        try:
            wsfiles.check_tree(list(config_files(node)))
        except wsfiles.UnsafePath as exc:
            return str(exc)
        stack.extend(node.sub_workspaces)
    return None


def config_files(b: Bundle) -> dict[str, bytes]:
    """The files a node's config dir gets; skill ids must be plain names (checked by check_tree too)."""
    out: dict[str, bytes] = {}
    if b.system_prompt:
        out[SYSTEM_PROMPT] = b.system_prompt.encode()
    if CONFIG_YAML in b.prompts:
        out[CONFIG_YAML] = b.prompts[CONFIG_YAML].encode()
    for skill in b.skills:
        if not wsfiles.is_plain_name(skill.id):
            raise wsfiles.UnsafePath(f"unsafe skill id {skill.id!r}")
        for rel, content in skill.files.items():
            out[f"{SKILLS}/{skill.id}/{rel}"] = content.encode()
    return out


def bundle_runtime(b: Bundle) -> str:
    """The config.yaml's unindented `runtime:` (the create flow's scanner), else langgraph."""
    runtime, _model = scan_runtime_and_model(b.prompts.get(CONFIG_YAML, ""))
    return runtime or DEFAULT_RUNTIME


async def import_bundle(ctx: AppContext, bundle: Bundle) -> dict[str, Any]:
    return await _import_node(ctx, bundle, None)


async def _import_node(ctx: AppContext, b: Bundle, parent_id: str | None) -> dict[str, Any]:
    ws_id = new_id()
    result: dict[str, Any] = {"workspace_id": ws_id, "name": b.name, "status": "provisioning"}
    tier = b.tier or DEFAULT_TIER  # absent tier: the create default, not a tier-0 row
    runtime = bundle_runtime(b)
    try:
        async with ctx.engine.begin() as conn:
            await insert_workspace(
                conn,
                id=ws_id,
                name=b.name,
                role=b.description or None,
                tier=tier,
                runtime=runtime,
                parent_id=parent_id,
                source_bundle_id=b.id or None,
            )
    except Exception:
        log.exception("bundle import: inserting workspace %s failed", ws_id)
        result.update(status="failed", error=RECORD_FAILED)  # never the driver's text (spec 06 §6)
        return result
    await ctx.events.record(
        "WORKSPACE_PROVISIONING", ws_id, {"name": b.name, "tier": tier, "source_bundle_id": b.id}
    )
    if await _write_files(ctx, ws_id, b):
        await _provision(ctx, ws_id, b, tier, runtime, parent_id)
    else:
        result.update(status="failed", error=FILES_FAILED)
    children = [await _import_node(ctx, sub, ws_id) for sub in b.sub_workspaces]
    if children:
        result["children"] = children
    return result


async def _write_files(ctx: AppContext, ws_id: str, b: Bundle) -> bool:
    """Write the node's files into its config dir; on failure the row is failed with a reason."""
    root = wsfiles.workspace_config_dir(ctx.settings, ws_id)
    try:
        await anyio.to_thread.run_sync(wsfiles.write_tree, root, config_files(b))
        return True
    except (OSError, wsfiles.UnsafePath):
        log.exception("bundle import: writing config files of %s failed", ws_id)
    await ctx.lifecycle.mark_failed(ws_id, FILES_FAILED, {"error": FILES_FAILED})
    return False


async def _provision(
    ctx: AppContext, ws_id: str, b: Bundle, tier: int, runtime: str, parent_id: str | None
) -> None:
    """Hand the node to the backend as workspace create does; with no backend, the same fail-fast rule."""
    svc = WorkspaceService(ctx)
    hook = svc.provisioner
    if hook is None:
        await svc.fail_without_backend(ws_id, b.name, runtime, tier, "")
        return
    source = await anyio.to_thread.run_sync(_config_source, ctx.settings, ws_id, b, runtime)
    spec = ProvisionSpec(
        workspace_id=ws_id,
        name=b.name,
        role=b.description,
        tier=tier,
        runtime=runtime,
        model="",  # the bundle's model is ignored on import, as upstream
        template="",
        template_path=source,
        workspace_dir="",
        workspace_access="none",
        parent_id=parent_id,
    )
    ctx.tasks.spawn(f"provision-{ws_id}", svc.run_provision(hook, spec))


def _config_source(settings: Settings, ws_id: str, b: Bundle, runtime: str) -> Path | None:
    """The bundle's own config dir when it brought a config.yaml, else the runtime default template."""
    if CONFIG_YAML in b.prompts:
        return wsfiles.workspace_config_dir(settings, ws_id)
    default = runtime_default_dir(settings, runtime)
    return default if default.is_dir() else None


# ---- export ----


async def export_bundle(ctx: AppContext, raw_id: str) -> dict[str, Any]:
    """The workspace and its non-removed descendants; anything wrong with the root is a 404."""
    ws_id = parse_uuid(raw_id)
    if ws_id is None:
        raise ApiError(404, NOT_FOUND)
    try:
        async with ctx.engine.connect() as conn:
            out = await _export_node(ctx.settings, conn, ws_id, {ws_id}, 1)
    except Exception:
        log.exception("bundle export of %s failed", ws_id)
        raise ApiError(404, NOT_FOUND) from None
    if out is None:
        raise ApiError(404, NOT_FOUND)
    return out


async def _export_node(
    settings: Settings, conn: AsyncConnection, ws_id: str, seen: set[str], depth: int
) -> dict[str, Any] | None:
    row = await get_workspace(conn, ws_id)
    if row is None:
        return None
    system_prompt, prompts, skills = await anyio.to_thread.run_sync(
        load_config_content, settings, ws_id, row.name, row.runtime
    )
    subs: list[dict[str, Any]] = []
    if depth < MAX_DEPTH:  # a parent_id cycle or an absurd depth stops here instead of recursing forever
        for child_id in await _live_children(conn, ws_id):
            if child_id in seen:
                continue
            seen.add(child_id)
            try:
                child = await _export_node(settings, conn, child_id, seen, depth + 1)
            except Exception:
                log.exception("bundle export: child %s skipped", child_id)
                continue
            if child is not None:
                subs.append(child)
    return {
        "schema": "1.0",
        "id": ws_id,
        "name": row.name,
        "description": row.role or "",
        "tier": row.tier,
        "model": "",
        "system_prompt": system_prompt,
        "skills": skills,
        "tools": [],
        "prompts": prompts,
        "sub_workspaces": subs,
        "agent_card": row.agent_card,
        "author": "",
        "version": "1.0.0",
    }


async def _live_children(conn: AsyncConnection, ws_id: str) -> list[str]:
    w = workspaces
    q = (
        sa.select(w.c.id)
        .where(w.c.parent_id == ws_id, w.c.status != Status.REMOVED)
        .order_by(w.c.created_at, w.c.id)
    )
    return [str(r.id) for r in (await conn.execute(q)).all()]


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")  # as Go's JSON encoder renders invalid UTF-8


def load_config_content(
    settings: Settings, ws_id: str, name: str, runtime: str
) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    """(system_prompt, prompts, skills) from the workspace's config dir, else its template."""
    own = wsfiles.workspace_config_dir(settings, ws_id)
    source = own if own.is_dir() and not own.is_symlink() else find_template_dir(settings, name, runtime)
    if source is None:
        return "", {}, []
    prompt = wsfiles.read_file(source, SYSTEM_PROMPT)
    config = wsfiles.read_file(source, CONFIG_YAML)
    prompts = {CONFIG_YAML: _text(config)} if config is not None else {}
    return (_text(prompt) if prompt is not None else ""), prompts, _load_skills(source / SKILLS)


def _load_skills(skills_dir: Path) -> list[dict[str, Any]]:
    if skills_dir.is_symlink() or not skills_dir.is_dir():
        return []
    tree = wsfiles.read_tree(skills_dir)
    skills = []
    for skill_id in wsfiles.subdirs(skills_dir):
        prefix = skill_id + "/"
        files = {
            rel[len(prefix) :]: _text(data) for rel, data in sorted(tree.items()) if rel.startswith(prefix)
        }
        skills.append(
            {
                "id": skill_id,
                "name": skill_id,
                "description": skill_description(files.get("SKILL.md", "")),
                "files": files,
            }
        )
    return skills


def skill_description(content: str) -> str:
    """First non-empty line not starting with `#`, outside `---` front matter."""
    in_front = False
    for line in content.split("\n"):
        if line == "---":
            in_front = not in_front
            continue
        if not in_front and line and not line.startswith("#"):
            return line
    return ""


def find_template_dir(settings: Settings, name: str, runtime: str) -> Path | None:
    """A template whose config.yaml `name` equals the workspace name, else `<runtime>-default`.

    DECIDE (spec 06 §6): the reference fell back to the first template with a config.yaml, exporting an
    unrelated agent's prompt and skills. We only take a template that names this workspace, or the
    runtime default a template-less create starts from.
    """
    root = settings.configs_dir
    for sub in wsfiles.subdirs(root):
        data = wsfiles.read_file(root / sub, CONFIG_YAML)
        if data is None:
            continue
        try:
            doc = yaml.safe_load(data)
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and doc.get("name") == name:
            return root / sub
    default = runtime_default_dir(settings, runtime)
    return default if wsfiles.read_file(default, CONFIG_YAML) is not None else None
