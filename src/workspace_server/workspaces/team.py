"""Team expand / collapse (spec 01 §4.5): a workspace's `sub_workspaces` become child workspaces, and back.

Expand reads the parent's template (`<CONFIGS_DIR>/<normalize_name(name)>/config.yaml`, else the template
whose `name:` is the parent's name: `config_source.find_by_name`, the lookup of a restart with
apply_template) and creates one child per `sub_workspaces` entry `{config, name, role}` through the
ordinary create path, so each child gets what any workspace gets: its token, secrets, confined template
path and provisioning. (The reference inserted the rows and started bare containers: no token, no
secrets, no stored URL, no path check.) An entry whose `config` names no template is created from the
defaults, as a create without a template; an entry the create path refuses is skipped.

Collapse removes the direct live children with the delete cascade (DECIDE): their own descendants,
tokens, schedules and cache keys go too, where the reference left them behind.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import yaml

from workspace_server.common.errors import ApiError
from workspace_server.provisioner.config_source import find_by_name
from workspace_server.workspaces import store
from workspace_server.workspaces.schemas import CreateWorkspace
from workspace_server.workspaces.service import WorkspaceService
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.templates import resolve_template

log = logging.getLogger(__name__)

NOT_FOUND = "workspace not found"
NO_CONFIG = "no config found for workspace"
NO_SUBS = "workspace has no sub_workspaces defined in config"


async def expand(svc: WorkspaceService, ws_id: str, platform_url: str) -> dict[str, Any]:
    parent = await _live_row(svc, ws_id)
    config = await asyncio.to_thread(_read_config, svc, parent.name)
    subs = config.get("sub_workspaces") if isinstance(config, dict) else None
    if not isinstance(subs, list) or not subs:
        raise ApiError(400, NO_SUBS)
    children: list[dict[str, Any]] = []
    for entry in subs:
        child = await _create_child(svc, parent, entry, platform_url)
        if child is not None:
            children.append(child)
    await svc.ctx.events.record("WORKSPACE_EXPANDED", ws_id, {"children": children})
    return {"children": children, "status": "expanded"}


async def collapse(svc: WorkspaceService, ws_id: str) -> dict[str, Any]:
    await _live_row(svc, ws_id)
    children = await svc.query(
        store.live_children, ws_id, failed=f"collapse {ws_id}: child lookup failed", answer="lookup failed"
    )
    removed: list[str] = []
    for child_id, name in children:
        try:
            await svc.delete(child_id, confirm=True, purge=False)
        except ApiError as exc:
            if "removed_count" not in exc.body:  # not even marked removed: it stays
                log.warning("collapse %s: removing child %s failed: %s", ws_id, child_id, exc.body)
                continue
            # marked removed, but a stop failed: removed all the same (the delete route says so too)
            log.warning("collapse %s: child %s removed, stop failed: %s", ws_id, child_id, exc.body)
        removed.append(name)
    await svc.ctx.events.record("WORKSPACE_COLLAPSED", ws_id, {"removed_children": removed})
    return {"removed": removed, "status": "collapsed"}


async def _live_row(svc: WorkspaceService, ws_id: str) -> Any:
    row = await svc.query(
        store.get_workspace, ws_id, failed=f"team {ws_id}: lookup failed", answer="lookup failed"
    )
    if row is None or row.status == Status.REMOVED:
        raise ApiError(404, NOT_FOUND)
    return row


def _read_config(svc: WorkspaceService, name: str) -> Any:
    template = find_by_name(svc.settings.configs_dir, name)  # the restart's template lookup, spec 02 §4
    if template is None:
        raise ApiError(400, NO_CONFIG)
    try:
        text = (template / "config.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        log.exception("expand: reading %s failed", template)
        raise ApiError(500, "failed to read config") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ApiError(500, "failed to parse config") from None


async def _create_child(
    svc: WorkspaceService, parent: Any, entry: Any, platform_url: str
) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        log.warning("expand %s: sub_workspaces entry %r is not a mapping; skipped", parent.id, entry)
        return None
    config = entry.get("config") if isinstance(entry.get("config"), str) else ""
    name = entry.get("name") if isinstance(entry.get("name"), str) and entry.get("name") else config
    role = entry.get("role") if isinstance(entry.get("role"), str) else ""
    template = config if config and await asyncio.to_thread(_is_template, svc, config) else None
    payload = CreateWorkspace(
        name=name, role=role or None, tier=parent.tier, parent_id=parent.id, template=template
    )
    try:
        created = await svc.create(payload, platform_url)
    except ApiError as exc:
        log.warning("expand %s: child %r not created: %s", parent.id, name, exc.body)
        return None
    return {"id": created["id"], "name": name, "role": role}


def _is_template(svc: WorkspaceService, config: str) -> bool:
    path = resolve_template(svc.settings, config)
    return path is not None and (path / "config.yaml").is_file()
