"""Chat attachments (spec 04 §4): stage uploads in the workspace, stream files out of it.

Uploads land in `/workspace/.molecule/chat-uploads/<32 hex>-<sanitised name>` and are answered with
`workspace:<absolute path>` URIs that the canvas later resolves through the download route. Which
storage holds a workspace is answered by its backend (`Backend.chat_files`, see fs.py): the Docker
container, or host directories (process backend, and also with no backend at all).
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workspace_server.chatfiles.fs import StageFailed, StageRefused, WorkspaceFS, host_fs
from workspace_server.common.errors import ApiError
from workspace_server.context import AppContext
from workspace_server.provisioner.base import InstanceNotRunning
from workspace_server.workspaces.status import Status
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

UPLOAD_DIR = "/workspace/.molecule/chat-uploads"
MAX_TOTAL_BYTES = 50 * 1024 * 1024
MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_NAME = 100
ALLOWED_ROOTS = ("/configs", "/workspace", "/home", "/plugins")
NOT_RUNNING = ApiError(503, "workspace container not running")
STAGE_FAILED = "failed to stage files in workspace"
_UNSAFE_CHARS = re.compile(r"[^a-zA-Z0-9._\-]")
_RFC3986_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


# ---------------------------------------------------------------- names and headers


def go_base(path: str) -> str:
    """Go's filepath.Base on Unix: the last element, trailing slashes ignored ("" → ".", "/" → "/")."""
    if not path:
        return "."
    path = path.rstrip("/")
    if not path:
        return "/"
    return path.rsplit("/", 1)[-1]


def go_ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 and "/" not in name[dot:] else ""


def sanitize_filename(raw: str) -> str:
    """Basename, spaces and every char outside `[A-Za-z0-9._-]` → `_`, at most 100 chars (extension kept)."""
    base = _UNSAFE_CHARS.sub("_", go_base(raw).replace(" ", "_"))
    if len(base) > MAX_NAME:
        ext = go_ext(base)
        if len(ext) > 16:
            ext = ""
        base = base[: MAX_NAME - len(ext)] + ext
    if base in ("", ".", ".."):
        return "file"
    return base


def content_disposition(name: str) -> str:
    """`attachment; filename="…"; filename*=UTF-8''…` with CR/LF/controls dropped and quotes escaped."""
    quoted = "".join(
        "\\" + ch if ch in '"\\' else ch
        for ch in name
        if ch not in "\r\n" and ord(ch) >= 0x20 and ch != "\x7f"
    )
    encoded = "".join(chr(b) if b in _RFC3986_UNRESERVED else f"%{b:02X}" for b in name.encode())
    return f"attachment; filename=\"{quoted}\"; filename*=UTF-8''{encoded}"


def mime_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or ""


# ---------------------------------------------------------------- which storage


async def workspace_fs(ctx: AppContext, ws_id: str) -> WorkspaceFS:
    """The storage of a live workspace, or 503 `workspace container not running`."""
    try:
        async with ctx.engine.connect() as conn:
            row = await get_workspace(conn, ws_id)
    except Exception:
        log.exception("chat files: workspace lookup failed for %s", ws_id)
        raise NOT_RUNNING from None
    if row is None or row.status == Status.REMOVED:
        raise NOT_RUNNING
    workspace_dir, access = row.workspace_dir or "", row.workspace_access or "none"
    try:
        if ctx.backend is None:  # no backend: the host directories, where a process agent kept them
            return host_fs(ctx.settings, ws_id, workspace_dir, access)
        return await ctx.backend.chat_files(ws_id, workspace_dir, access)
    except InstanceNotRunning:
        raise NOT_RUNNING from None


# ---------------------------------------------------------------- upload / download


def _too_large(name: str) -> ApiError:
    return ApiError(413, f"{name} exceeds per-file limit ({MAX_FILE_BYTES // (1024 * 1024)} MB)")


async def upload(ctx: AppContext, ws_id: str, uploads: list[Upload]) -> list[dict[str, Any]]:
    """Stage the files; the reply's `files` entries in the reference's field order."""
    fs = await workspace_fs(ctx, ws_id)
    staged: dict[str, bytes] = {}
    reply: list[dict[str, Any]] = []
    for up in uploads:
        if len(up.data) > MAX_FILE_BYTES:
            raise _too_large(up.filename)
        name = sanitize_filename(up.filename)
        stored = _unique_name(name, staged)
        staged[stored] = up.data
        entry: dict[str, Any] = {"uri": f"workspace:{UPLOAD_DIR}/{stored}", "name": name}
        mt = up.content_type or mime_type(name)
        if mt:
            entry["mimeType"] = mt
        entry["size"] = len(up.data)
        reply.append(entry)
    try:
        await fs.write_flat(UPLOAD_DIR, staged)
    except StageRefused as exc:  # through a symlink planted in the workspace: forbidden, not a 500
        log.info("chat upload for %s refused: %s", ws_id, exc)
        raise ApiError(403, STAGE_FAILED) from None
    except StageFailed as exc:
        log.warning("chat upload for %s failed: %s", ws_id, exc)
        raise ApiError(500, STAGE_FAILED) from None
    return reply


def _unique_name(name: str, taken: Mapping[str, bytes]) -> str:
    for _ in range(4):  # 128 random bits: a clash means a broken RNG, never overwrite a sibling
        candidate = f"{secrets.token_hex(16)}-{name}"
        if candidate not in taken:
            return candidate
    raise ApiError(500, "failed to allocate unique upload ID")


def check_download_path(path: str) -> None:
    """Absolute, clean, under an allowed root — each failure with the reference's message."""
    if not path:
        raise ApiError(400, "path query required")
    if not path.startswith("/"):
        raise ApiError(400, "path must be absolute")
    if not any(path == root or path.startswith(root + "/") for root in ALLOWED_ROOTS):
        raise ApiError(400, "path must be under /configs, /workspace, /home, or /plugins")
    if posixpath.normpath(path) != path or ".." in path or "\x00" in path:
        raise ApiError(400, "invalid path")
