"""The plugin endpoints' work (spec 06 §3.2): list the registry, stage a plugin from a source, install it
into a workspace's `/configs/plugins/<name>`, list and uninstall installed ones, and pack a download.

Everything inside a workspace goes through the backend's file access (`provisioner.base.FileAccess`), so
install works on the process backend as on Docker (the reference required Docker). A plugin is staged
in a `molecule-plugin-fetch-*` temp dir that is always removed; only regular files survive staging, and
every write lands under `plugins/<name>/` of the config volume, with `<name>` checked first. Errors never
carry git's, the backend's or the OS's text.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import sqlalchemy as sa

from workspace_server import authz, egress
from workspace_server.authz import Actor as AuthInfo
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.common.jsonbody import parse_json
from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.db.schema import workspaces
from workspace_server.plugins import sources
from workspace_server.plugins.allowlist import install_allowed
from workspace_server.plugins.manifest import (
    MANIFEST_FILE,
    is_handler_name,
    plugin_item,
    supports_runtime,
)
from workspace_server.provisioner.base import BackendError, FileAccess, InstanceNotRunning
from workspace_server.workspaces.files import read_file, read_tree, subdirs

log = logging.getLogger(__name__)

RESTARTS_GROUP = "plugin-restart"  # the task supervisor group of restarts after a plugin change
UNINSTALL_RESTART_DELAY = 2.0  # seconds, as the reference (lets the agent finish writing its reply)
NOT_RUNNING = "workspace container not running"
INVALID_NAME = "invalid plugin name"
CLAUDE_MD = "CLAUDE.md"


# ---------------------------------------------------------------- sources registry


def make_source_registry(s: Settings) -> sources.SourceRegistry:
    """The app's resolvers (`local`, `github`), built once by the composition root; logs the install
    limits then."""
    found = sources.SourceRegistry()
    found.register(sources.LocalResolver(s.plugins_dir))
    found.register(
        sources.GithubResolver(s.PLUGIN_GITHUB_BASE_URL, s.plugin_allow_unpinned, policy=egress.policy_for(s))
    )
    log.info(
        "Plugin install limits: body=%d timeout=%ss staged=%d",
        s.plugin_body_max_bytes,
        s.plugin_fetch_timeout_seconds,
        s.plugin_max_dir_bytes,
    )
    return found


def source_registry(ctx: AppContext) -> sources.SourceRegistry:
    return ctx.plugin_sources


# ---------------------------------------------------------------- registry listing


def _registry_items(root: Path) -> list[dict[str, Any]]:
    return [plugin_item(name, read_file(root / name, MANIFEST_FILE)) for name in subdirs(root)]


async def list_registry(ctx: AppContext, runtime: str = "") -> list[dict[str, Any]]:
    """Every subdir of the plugins dir ([] when unreadable), filtered by `runtime` when given."""
    try:
        items = await anyio.to_thread.run_sync(_registry_items, ctx.settings.plugins_dir)
    except OSError:
        return []
    return [i for i in items if not runtime or supports_runtime(i, runtime)]


async def _runtime_of(ctx: AppContext, ws_id: str) -> str | None:
    """`COALESCE(runtime, 'langgraph')`; None when the row is missing or the lookup fails."""
    if parse_uuid(ws_id) is None:
        return None
    try:
        async with ctx.engine.connect() as conn:
            q = sa.select(sa.func.coalesce(workspaces.c.runtime, "langgraph")).where(workspaces.c.id == ws_id)
            value = (await conn.execute(q)).scalar()
    except Exception as exc:
        log.warning("runtime lookup for %s failed: %s", ws_id, type(exc).__name__)
        return None
    return str(value) if value is not None else None


async def list_available(ctx: AppContext, ws_id: str) -> list[dict[str, Any]]:
    runtime = await _runtime_of(ctx, ws_id)
    return await list_registry(ctx, runtime or "")


# ---------------------------------------------------------------- the workspace side


async def _running_files(ctx: AppContext, ws_id: str) -> FileAccess | None:
    """The backend's file access when the workspace's instance runs, else None."""
    backend = ctx.backend
    if parse_uuid(ws_id) is None or backend is None or not isinstance(backend, FileAccess):
        return None
    try:
        running = await backend.is_running(ws_id)
    except BackendError:
        return None
    return backend if running else None


async def _installed_items(files: FileAccess, ws_id: str, runtime: str | None) -> list[dict[str, Any]]:
    entries = await files.list_files(ws_id, "/configs/plugins", 1)
    names = sorted(e.path for e in entries if e.dir and is_handler_name(e.path))
    items = []
    for name in names:
        try:
            raw = await files.read_file(ws_id, f"/configs/plugins/{name}/{MANIFEST_FILE}")
        except BackendError:
            raw = None
        items.append(plugin_item(name, raw, runtime))
    return items


async def list_installed(ctx: AppContext, ws_id: str) -> list[dict[str, Any]]:
    files = await _running_files(ctx, ws_id)
    if files is None:
        return []
    runtime = await _runtime_of(ctx, ws_id)
    try:
        return await _installed_items(files, ws_id, runtime)
    except InstanceNotRunning:
        return []
    except BackendError as exc:
        log.warning("listing plugins of %s failed: %s", ws_id, exc.detail or exc.message)
        raise ApiError(500, "failed to list installed plugins") from None


async def compatibility(ctx: AppContext, ws_id: str, runtime: str) -> dict[str, Any]:
    """Which installed plugins support `runtime` (the target of a runtime change)."""
    if not runtime:
        raise ApiError(400, "runtime query parameter is required")
    out: dict[str, Any] = {
        "target_runtime": runtime,
        "compatible": [],
        "incompatible": [],
        "all_compatible": True,
    }
    files = await _running_files(ctx, ws_id)
    if files is None:
        return out
    try:
        items = await _installed_items(files, ws_id, runtime)
    except InstanceNotRunning:
        return out
    except BackendError as exc:
        log.warning("compatibility check of %s failed: %s", ws_id, exc.detail or exc.message)
        raise ApiError(500, "failed to list installed plugins") from None
    for item in items:
        out["compatible" if item["supported_on_runtime"] else "incompatible"].append(item)
    out["all_compatible"] = not out["incompatible"]
    return out


# ---------------------------------------------------------------- staging


@dataclass(frozen=True)
class Staged:
    name: str
    source: sources.SourceSpec
    files: dict[str, bytes]  # relpath → content, regular files only


def _fetch_error(status: int, spec: sources.SourceSpec) -> ApiError:
    return ApiError(status, f"failed to fetch plugin from {spec.scheme}", source=spec.raw)


def _resolve(ctx: AppContext, raw: str) -> tuple[sources.SourceSpec, sources.Resolver]:
    try:
        spec = sources.parse_source(raw)
    except sources.InvalidSource:
        raise ApiError(400, "invalid plugin source") from None
    registry = source_registry(ctx)
    try:
        resolver = registry.get(spec.scheme)
    except sources.UnknownScheme:
        raise ApiError(400, "failed to resolve plugin source", available_schemes=registry.schemes()) from None
    try:
        resolver.validate(spec.spec)
    except sources.InvalidPluginName:
        raise ApiError(400, INVALID_NAME) from None
    except sources.UnpinnedSource:
        msg = "unpinned github source: pin a ref with #<tag> (or set PLUGIN_ALLOW_UNPINNED=true)"
        raise ApiError(422, msg, source=spec.raw) from None
    except sources.SourceError:
        raise ApiError(400, "invalid plugin source") from None
    return spec, resolver


async def _fetch(ctx: AppContext, spec: sources.SourceSpec, resolver: sources.Resolver, dest: Path) -> str:
    s = ctx.settings
    try:
        return await asyncio.wait_for(
            resolver.fetch(spec.spec, dest, s.plugin_max_dir_bytes), s.plugin_fetch_timeout_seconds
        )
    except sources.StagedTooLarge:
        raise ApiError(413, "staged plugin exceeds size limit") from None
    except sources.InvalidPluginName:
        raise ApiError(400, INVALID_NAME) from None
    except sources.PluginNotFound:
        raise _fetch_error(404, spec) from None
    except TimeoutError:
        raise _fetch_error(504, spec) from None
    except (sources.SourceError, OSError) as exc:
        log.warning("fetching plugin %s failed: %s", spec.raw, exc)
        raise _fetch_error(502, spec) from None


def _load_staged(dest: Path, cap: int) -> dict[str, bytes]:
    if sources.staged_size(dest) > cap:
        raise ApiError(413, "staged plugin exceeds size limit")
    return read_tree(dest, cap)


async def stage(ctx: AppContext, raw_source: str) -> Staged:
    """Resolve, fetch under the timeout, check name, size and manifest integrity; staging always removed."""
    spec, resolver = _resolve(ctx, raw_source)
    tmp = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="molecule-plugin-fetch-")))
    try:
        name = await _fetch(ctx, spec, resolver, tmp)
        if not is_handler_name(name) or Path(name).name != name:
            raise ApiError(400, INVALID_NAME)
        files = await anyio.to_thread.run_sync(_load_staged, tmp, ctx.settings.plugin_max_dir_bytes)
    finally:
        await anyio.to_thread.run_sync(shutil.rmtree, tmp, True)
    if not sources.integrity_ok(files):
        raise ApiError(422, "plugin manifest integrity check failed")
    return Staged(name, spec, files)


# ---------------------------------------------------------------- install / uninstall


def parse_install_body(raw: bytes) -> tuple[str, str]:
    """(source, sha256) from `{"source","sha256"?}`."""
    data = parse_json(raw, "invalid request body")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid request body")
    source, sha = data.get("source"), data.get("sha256")
    if (source is not None and not isinstance(source, str)) or (sha is not None and not isinstance(sha, str)):
        raise ApiError(400, "invalid request body")
    if not source or not source.strip():
        raise ApiError(400, "source is required")
    return source, (sha or "").strip()


def check_sha256(files: dict[str, bytes], want: str) -> None:
    """The caller's pin: sha256 of the plugin's plugin.yaml."""
    if not want:
        return
    raw = files.get(MANIFEST_FILE)
    if raw is None:
        raise ApiError(422, "sha256 given but the plugin has no plugin.yaml")
    got = hashlib.sha256(raw).hexdigest()
    if got != want.lower():
        raise ApiError(422, f"sha256 mismatch: expected {want}, got {got}")


async def install(ctx: AppContext, ws_id: str, raw_body: bytes) -> dict[str, Any]:
    source, sha = parse_install_body(raw_body)
    staged = await stage(ctx, source)
    check_sha256(staged.files, sha)
    if not await install_allowed(ctx, ws_id, staged.name):
        raise ApiError(403, f'plugin "{staged.name}" is not in the org allowlist')
    files = await _running_files(ctx, ws_id)
    if files is None:
        raise ApiError(503, NOT_RUNNING)
    payload = config_payload(staged)
    try:
        await files.delete_path(ws_id, f"plugins/{staged.name}")  # a reinstall leaves no stale files
        await files.write_files(ws_id, payload)
    except InstanceNotRunning:
        raise ApiError(503, NOT_RUNNING) from None
    except BackendError as exc:
        log.error("installing plugin %s into %s failed: %s", staged.name, ws_id, exc.detail or exc.message)
        raise ApiError(500, "failed to install plugin") from None
    log.info("plugin %s installed into %s from %s", staged.name, ws_id, staged.source.raw)
    schedule_restart(ctx, ws_id)
    return {"status": "installed", "plugin": staged.name, "source": staged.source.raw}


def config_payload(staged: Staged) -> dict[str, bytes]:
    """A staged plugin as config-volume files, `plugins/<name>/<rel>` (install and org import share it)."""
    return {f"plugins/{staged.name}/{rel}": data for rel, data in staged.files.items()}


async def stage_registry_plugin(ctx: AppContext, name: str) -> Staged:
    """A plugin of the local registry by bare name (an org.yaml `plugins:` entry), through the same
    resolver, name, size and integrity checks as an install; `ApiError` with the install's message."""
    return await stage(ctx, f"local://{name}")


def strip_plugin_blocks(text: str, name: str) -> str:
    """Drop `# Plugin: <name> /…` blocks: up to the 2nd blank line or the next `# Plugin: ` header."""
    marker, out = f"# Plugin: {name} /", []
    skipping, blanks = False, 0
    for line in text.split("\n"):
        if line.startswith(marker):
            skipping, blanks = True, 0
            continue
        if skipping and line.startswith("# Plugin: "):
            skipping = False
        elif skipping:
            blanks += not line.strip()
            skipping = blanks < 2
            continue
        out.append(line)
    return "\n".join(out)


async def _cleanup_rules_and_skills(files: FileAccess, ws_id: str, name: str) -> None:
    """Best effort: the plugin's CLAUDE.md blocks and its skills dirs."""
    try:
        raw = await files.read_file(ws_id, f"/configs/plugins/{name}/{MANIFEST_FILE}")
        skills = plugin_item(name, raw)["skills"] or []
        claude = await files.read_file(ws_id, f"/configs/{CLAUDE_MD}")
        if claude is not None:
            text = claude.decode("utf-8", "replace")
            stripped = strip_plugin_blocks(text, name)
            if stripped != text:
                await files.write_files(ws_id, {CLAUDE_MD: stripped.encode()})
        for skill in skills:
            if is_handler_name(skill) and skill not in (".", ".."):
                await files.delete_path(ws_id, f"skills/{skill}")
    except BackendError as exc:
        log.warning("plugin %s cleanup in %s incomplete: %s", name, ws_id, exc.detail or exc.message)


async def uninstall(ctx: AppContext, ws_id: str, name: str) -> dict[str, Any]:
    if not is_handler_name(name) or name in (".", ".."):
        raise ApiError(400, INVALID_NAME)
    files = await _running_files(ctx, ws_id)
    if files is None:
        raise ApiError(503, NOT_RUNNING)
    await _cleanup_rules_and_skills(files, ws_id, name)
    try:
        await files.delete_path(ws_id, f"plugins/{name}")
    except InstanceNotRunning:
        raise ApiError(503, NOT_RUNNING) from None
    except BackendError as exc:
        log.error("removing plugin %s from %s failed: %s", name, ws_id, exc.detail or exc.message)
        raise ApiError(500, "failed to remove plugin") from None
    schedule_restart(ctx, ws_id, delay=UNINSTALL_RESTART_DELAY)
    return {"status": "uninstalled", "plugin": name}


def schedule_restart(ctx: AppContext, ws_id: str, delay: float = 0.0) -> None:
    """Ask the orchestrator's restart hook (when there is one) to restart the workspace, in background."""
    hook = ctx.restart_hook
    if hook is None:
        return

    async def run() -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            await hook(ws_id)
        except Exception as exc:
            log.warning("restart of %s after a plugin change failed: %s", ws_id, type(exc).__name__)

    ctx.tasks.spawn(f"plugin-restart:{ws_id}", run(), group=RESTARTS_GROUP)


# ---------------------------------------------------------------- download


async def check_download_token(ctx: AppContext, auth: AuthInfo, ws_id: str) -> None:
    """Once the workspace has a live token, only its own token (or the admin token) may download."""
    await authz.download_actor(ctx, auth, ws_id)


def pack_tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of `files` with paths relative to the plugin root (regular files only)."""
    buf, now = io.BytesIO(), int(time.time())
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(files[rel]), 0o644, now
            tar.addfile(info, io.BytesIO(files[rel]))
    return buf.getvalue()


async def download(
    ctx: AppContext, auth: AuthInfo, ws_id: str, name: str, source: str
) -> tuple[bytes, Staged]:
    if not is_handler_name(name) or name in (".", ".."):
        raise ApiError(400, INVALID_NAME)
    await check_download_token(ctx, auth, ws_id)
    staged = await stage(ctx, source or f"local://{name}")
    if staged.name != name:
        raise ApiError(400, "plugin name mismatch", resolved_name=staged.name, requested_name=name)
    try:
        data = await anyio.to_thread.run_sync(pack_tar_gz, staged.files)
    except (OSError, tarfile.TarError) as exc:
        log.error("packing plugin %s failed: %s", name, exc)
        raise ApiError(500, "failed to package plugin") from None
    return data, staged
