"""The container files API (spec 02 §7): what a workspace's files are, wherever they live.

The backend holds the files (`provisioner.base.FileAccess`: the docker backend through argv execs and
the archive API, the process backend on host dirs). When it has nothing for the workspace (no running
instance and, for /configs, no stored config volume), reads fall back to the host template matched by
the workspace's name, read-only. Fixes against the reference (docs/decisions.md "Terminal, files,
templates"): a missing file is a 404 (the reference ignored exit codes and answered 200 with empty
content); content is returned untrimmed; DELETE works (the reference refused every request); the
template stands in for /configs only; and no shell string is ever built from a path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
import yaml

from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.context import AppContext
from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    FILES_API_ROOTS,
    MAX_EXEC_OUTPUT,
    BackendError,
    FileAccess,
    FileTooLargeError,
    InstanceNotRunning,
    InvalidPath,
)
from workspace_server.provisioner.runtimes import RuntimeImages, RuntimeImagesError
from workspace_server.templates.service import confined_tree, generate_default_config
from workspace_server.workspaces.files import FileTooLarge, UnsafePath, list_tree, read_regular, write_tree
from workspace_server.workspaces.store import get_workspace
from workspace_server.workspaces.templates import clean_rel_path, resolve_workspace_template_dir

log = logging.getLogger(__name__)

ROOT_ERROR = "root must be one of: /configs, /workspace, /home, /plugins"
INVALID_PATH = "invalid path"
INVALID_BODY = "invalid request body"
MAX_DEPTH = 5
_INT = re.compile(r"^[+-]?[0-9]+$")  # Go's strconv.Atoi: optional sign, digits, nothing else


# ---------------------------------------------------------------- request parsing (pure)


def parse_root(raw: str | None) -> str:
    root = CONFIG_MOUNT if raw is None else raw
    if root not in FILES_API_ROOTS:
        raise ApiError(400, ROOT_ERROR)
    return root


def parse_depth(raw: str | None) -> int:
    if raw is None or raw == "":
        return 1
    if not _INT.match(raw) or not 1 <= int(raw) <= MAX_DEPTH:
        raise ApiError(400, "depth must be 1-5")
    return int(raw)


def parse_rel(raw: str) -> str:
    """A validated, normalised relative path (the reference's validateRelPath), else 400 `invalid path`."""
    clean = clean_rel_path(raw)
    if clean is None:
        raise ApiError(400, INVALID_PATH)
    return clean


def parse_content_body(data: Any) -> str:
    """`{"content": string}`; JSON null and a missing key are "" (as Go decodes them)."""
    if data is None:
        return ""
    if not isinstance(data, dict):
        raise ApiError(400, INVALID_BODY)
    content = data.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ApiError(400, INVALID_BODY)
    return content


def parse_files_body(data: Any) -> dict[str, str]:
    """`{"files": {path: string}}` with `files` required (gin's binding:"required": present, not null)."""
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(v is None or isinstance(v, str) for v in files.values()):
        raise ApiError(400, INVALID_BODY)
    return {k: v or "" for k, v in files.items()}


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")  # invalid UTF-8 becomes U+FFFD, as Go's JSON encoder does


# ---------------------------------------------------------------- the service


@dataclass(frozen=True)
class WorkspaceRef:
    id: str
    name: str
    runtime: str


class FilesService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings

    async def workspace(self, raw_id: str) -> WorkspaceRef:
        """The workspace (removed rows too, as the reference), or 404 `workspace not found`."""
        ws_id = parse_uuid(raw_id)
        if ws_id is None:  # the reference's lookup finds no row for a malformed id
            raise ApiError(404, "workspace not found")
        async with self.ctx.engine.connect() as conn:
            row = await get_workspace(conn, ws_id)
        if row is None:
            raise ApiError(404, "workspace not found")
        return WorkspaceRef(ws_id, row.name or "", row.runtime or "")

    def _files(self) -> FileAccess | None:
        backend = self.ctx.backend
        return backend if isinstance(backend, FileAccess) else None

    def _helper_image(self, ws: WorkspaceRef) -> str:
        """The workspace's runtime image, used (only if already on the host) to reach a stopped volume."""
        try:
            return RuntimeImages.from_settings(self.settings).image_for(ws.runtime)
        except RuntimeImagesError:
            return ""

    async def _template_dir(self, ws: WorkspaceRef) -> Path | None:
        return await anyio.to_thread.run_sync(resolve_workspace_template_dir, self.settings, ws.name)

    # ---- list ----
    async def list_files(self, ws: WorkspaceRef, root: str, rel: str, depth: int) -> list[dict[str, Any]]:
        directory = f"{root}/{rel}" if rel else root
        files = self._files()
        if files is not None:
            try:
                entries = await files.list_files(ws.id, directory, depth, helper_image=self._helper_image(ws))
                return [{"path": e.path, "size": e.size, "dir": e.dir} for e in entries]
            except InstanceNotRunning:
                pass
            except BackendError as exc:
                log.warning("listing %s of %s failed, using the template: %s", directory, ws.id, exc.detail)
        if root != CONFIG_MOUNT:
            return []
        template = await self._template_dir(ws)
        if template is None:
            return []
        rows = await anyio.to_thread.run_sync(list_tree, template, rel, depth)
        return [{"path": p, "size": 0 if d else s, "dir": d} for p, s, d in rows or []]

    # ---- read ----
    async def read_bytes(self, ws: WorkspaceRef, root: str, rel: str) -> bytes:
        """The file's bytes; 404 (`file not found`, or the offline/no-template text), 413 when too large."""
        reached, data = await self._read_from_backend(ws, root, rel)
        if reached:
            if data is None:
                raise ApiError(404, "file not found")
            return data
        template = await self._template_dir(ws) if root == CONFIG_MOUNT else None
        if template is None:
            raise ApiError(404, "file not found (container offline, no template)")
        try:
            found = await anyio.to_thread.run_sync(read_regular, template, rel, MAX_EXEC_OUTPUT)
        except FileTooLarge:
            raise ApiError(413, "file too large") from None
        if found is None:
            raise ApiError(404, "file not found")
        return found

    async def _read_from_backend(self, ws: WorkspaceRef, root: str, rel: str) -> tuple[bool, bytes | None]:
        """(whether the backend had the workspace's files, the bytes or None when missing there)."""
        files = self._files()
        if files is None:
            return False, None
        try:
            return True, await files.read_file(ws.id, f"{root}/{rel}", helper_image=self._helper_image(ws))
        except FileTooLargeError:
            raise ApiError(413, "file too large") from None
        except InstanceNotRunning:
            return False, None
        except BackendError as exc:
            log.warning("reading %s/%s of %s failed, using the template: %s", root, rel, ws.id, exc.detail)
            return False, None

    async def read_file(self, ws: WorkspaceRef, root: str, raw_path: str, rel: str) -> dict[str, Any]:
        data = await self.read_bytes(ws, root, rel)
        return {"content": _text(data), "path": raw_path, "size": len(data)}

    # ---- write ----
    async def write_file(self, ws: WorkspaceRef, raw_path: str, rel: str, content: str) -> dict[str, Any]:
        files = self._files()
        if files is None:
            raise ApiError(500, "failed to write file: no workspace backend available")
        try:
            await files.write_files(
                ws.id, {rel: content.encode("utf-8", "replace")}, helper_image=self._helper_image(ws)
            )
        except InvalidPath as exc:  # through a planted symlink, onto a directory: bad input, not a 500
            log.info("writing %s of %s refused: %s", rel, ws.id, exc.detail)
            raise ApiError(400, INVALID_PATH) from None
        except BackendError as exc:
            log.warning("writing %s of %s failed: %s", rel, ws.id, exc.detail)
            raise ApiError(500, f"failed to write file: {exc.message}") from None
        return {"path": raw_path, "status": "saved"}

    async def replace_files(self, ws: WorkspaceRef, raw: dict[str, str]) -> dict[str, Any]:
        tree = confined_tree(raw)
        source = await self._write_tree(ws, tree)
        return {"files": len(raw), "source": source, "status": "replaced", "workspace": ws.id}

    async def _write_tree(
        self, ws: WorkspaceRef, tree: dict[str, bytes]
    ) -> Literal["container", "volume", "template"]:
        """Backend (container, else stored volume), else the host template dir as the last resort."""
        files = self._files()
        if files is not None:
            image = self._helper_image(ws)
            try:
                source = await files.write_files(ws.id, tree, helper_image=image)
            except InstanceNotRunning:
                pass
            except InvalidPath as exc:
                log.info("replacing files of %s refused: %s", ws.id, exc.detail)
                raise ApiError(400, INVALID_PATH) from None
            except BackendError as exc:
                log.warning("replacing files of %s failed, trying the template: %s", ws.id, exc.detail)
            else:
                await self._ensure_config(files, ws, tree, image)
                return source
        template = await self._template_dir(ws)
        if template is None:
            raise ApiError(500, "failed to write files to workspace")
        try:
            await anyio.to_thread.run_sync(write_tree, template, tree)
        except (OSError, UnsafePath):
            log.exception("replacing files of %s in template %s failed", ws.id, template)
            raise ApiError(500, "failed to write files to workspace") from None
        return "template"

    async def _ensure_config(
        self, files: FileAccess, ws: WorkspaceRef, tree: dict[str, bytes], image: str
    ) -> None:
        """Generate config.yaml when neither the upload nor the workspace has one (the reference meant to;
        its check never fired because exec exit codes were ignored)."""
        if "config.yaml" in tree:
            return
        try:
            if await files.read_file(ws.id, f"{CONFIG_MOUNT}/config.yaml", helper_image=image) is not None:
                return
            generated = generate_default_config(ws.name, list(tree)).encode()
            await files.write_files(ws.id, {"config.yaml": generated}, helper_image=image)
        except BackendError as exc:  # best effort, as upstream: the upload itself succeeded
            log.warning("generating config.yaml for %s failed: %s", ws.id, exc.detail)

    # ---- delete ----
    async def delete_file(self, ws: WorkspaceRef, raw_path: str, rel: str) -> dict[str, Any]:
        files = self._files()
        if files is None:
            raise ApiError(500, "failed to delete: no workspace backend available")
        try:
            await files.delete_path(ws.id, rel, helper_image=self._helper_image(ws))
        except InstanceNotRunning:
            pass  # nothing stored for the workspace: the path is already absent
        except InvalidPath as exc:
            log.info("deleting %s of %s refused: %s", rel, ws.id, exc.detail)
            raise ApiError(400, INVALID_PATH) from None
        except BackendError as exc:
            log.warning("deleting %s of %s failed: %s", rel, ws.id, exc.detail)
            raise ApiError(500, f"failed to delete: {exc.message}") from None
        return {"path": raw_path, "status": "deleted"}

    # ---- shared context ----
    async def shared_context(self, ws: WorkspaceRef) -> list[dict[str, str]]:
        """`[{path, content}]` for each valid `shared_context` entry of config.yaml; [] on any failure."""
        try:
            config = await self.read_bytes(ws, CONFIG_MOUNT, "config.yaml")
            doc = yaml.safe_load(config)
        except (ApiError, yaml.YAMLError):
            return []
        entries = doc.get("shared_context") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            return []
        out: list[dict[str, str]] = []
        for entry in entries:
            rel = clean_rel_path(entry) if isinstance(entry, str) else None
            if rel is None:
                continue
            try:  # one argument to read: /configs/<rel> (the reference passed `/configs` and rel apart)
                data = await self.read_bytes(ws, CONFIG_MOUNT, rel)
            except ApiError:
                continue
            out.append({"path": entry, "content": _text(data)})
        return out
