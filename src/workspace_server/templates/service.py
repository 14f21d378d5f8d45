"""`GET /templates` and `POST /templates/import` (spec 02 §4), on the host's `settings.configs_dir`.

Listing parses every `<configs_dir>/<dir>/config.yaml` with `yaml.safe_load`; a file that is not a
mapping, or whose fields have the wrong types, is skipped (Go's typed unmarshal fails on those too).
Imports validate every path before anything is written, create the directory atomically (a racing
import gets the 409), write files 0600 through the symlink-refusing writer, and remove what they wrote
when a write fails, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workspace_server.common.errors import ApiError
from workspace_server.config import Settings
from workspace_server.workspaces.files import (
    MAX_FILE_BYTES,
    UnsafePath,
    check_tree,
    is_plain_name,
    read_file,
    write_tree,
)
from workspace_server.workspaces.templates import (
    clean_rel_path,
    clear_template_caches,
    normalize_name,
    validate_rel_path,
)

log = logging.getLogger(__name__)

MAX_UPLOAD_FILES = 200
IMPORTED_FILE_MODE = 0o600
INVALID_BODY = "invalid request body"


class _BadField(ValueError):
    """A config.yaml field whose type Go's typed unmarshal would refuse."""


# ---------------------------------------------------------------- listing


def _text(value: Any) -> str:
    """A YAML scalar as Go decodes it into a string field; collections are a type error."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise _BadField(repr(value))


def _int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadField(repr(value))
    return value


def _texts(value: Any) -> list[str] | None:
    """A YAML sequence of scalars; None when absent (Go's nil slice, rendered as `null`)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise _BadField(repr(value))
    return [_text(v) for v in value]


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadField(repr(value))
    return value


def _model(raw: Any) -> dict[str, Any]:
    """`{id, name?, required_env?}` — empty name and required_env are omitted, as Go's omitempty."""
    spec = _mapping(raw)
    out: dict[str, Any] = {"id": _text(spec.get("id"))}
    if name := _text(spec.get("name")):
        out["name"] = name
    if required := _texts(spec.get("required_env")):
        out["required_env"] = required
    return out


def template_summary(dir_name: str, doc: Any) -> dict[str, Any] | None:
    """One `GET /templates` item from a parsed config.yaml, keys in the reference's order; None to skip."""
    try:
        cfg = _mapping(doc)
        rc = _mapping(cfg.get("runtime_config"))
        models_raw = rc.get("models")
        if models_raw is not None and not isinstance(models_raw, list):
            raise _BadField("models")
        models = [_model(m) for m in models_raw or []]
        required_env = _texts(rc.get("required_env"))
        skills = _texts(cfg.get("skills"))
        timeout = _int(rc.get("provision_timeout_seconds"))
        item: dict[str, Any] = {
            "id": dir_name,
            "name": _text(cfg.get("name")),
            "description": _text(cfg.get("description")),
            "tier": _int(cfg.get("tier")),
            "runtime": _text(cfg.get("runtime")),
            "model": _text(cfg.get("model")) or _text(rc.get("model")),
        }
    except _BadField:
        return None
    if models:
        item["models"] = models
    if required_env:
        item["required_env"] = required_env
    item["skills"] = skills
    item["skill_count"] = len(skills or [])
    if timeout:
        item["provision_timeout_seconds"] = timeout
    return item


def list_templates(configs_dir: Path) -> list[dict[str, Any]]:
    """Every template dir (real directories, in name order) with a parseable config.yaml."""
    try:
        with os.scandir(configs_dir) as it:
            names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for name in names:
        raw = read_file(configs_dir / name, "config.yaml", MAX_FILE_BYTES)
        if raw is None:
            continue
        try:
            doc = yaml.safe_load(raw)
        except yaml.YAMLError:
            continue
        item = template_summary(name, doc)
        if item is not None:
            out.append(item)
    return out


# ---------------------------------------------------------------- import


def _yaml_quoted(text: str) -> str:
    """A YAML double-quoted scalar; the reference escapes exactly these five characters (#221, #460)."""
    for raw, esc in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(raw, esc)
    return f'"{text}"'


def generate_default_config(name: str, paths: list[str]) -> str:
    """The reference's generated config.yaml for an import or a replace without one (spec 02 §4).

    Prompt files are the root `*.md` files (else `system-prompt.md`); skills are the `<x>` of
    `skills/<x>/SKILL.md`. Both lists are sorted (Go's map order was random). No `runtime:` key.
    """
    prompts = sorted(p for p in paths if "/" not in p and p.endswith(".md"))
    skills = sorted(
        {
            p.split("/")[1]
            for p in paths
            if len(p.split("/")) == 3 and p.startswith("skills/") and p.endswith("/SKILL.md")
        }
    )
    lines = [
        f"name: {_yaml_quoted(name)}",
        "description: Imported agent",
        "version: 1.0.0",
        "tier: 3",
        "model: anthropic:claude-haiku-4-5-20251001",
        "",
        "prompt_files:",
        *([f"  - {_yaml_quoted(p)}" for p in prompts] or ["  - system-prompt.md"]),
        "",
        "skills:",
        *([f"  - {_yaml_quoted(s)}" for s in skills] or ["  []"]),
        "",
        "tools: []",
        "",
        "a2a:",
        "  port: 8000",
        "  streaming: true",
        "  push_notifications: true",
        "",
        "env:",
        "  required:",
        "    - ANTHROPIC_API_KEY",
        "  optional: []",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ImportRequest:
    name: str
    files: dict[str, str]


def parse_import_body(data: Any) -> ImportRequest:
    """`{name*, files*}` as gin binds it: name a non-empty string, files an object of strings."""
    if not isinstance(data, dict):
        raise ApiError(400, INVALID_BODY)
    name, files = data.get("name"), data.get("files")
    if not isinstance(name, str) or not name or not isinstance(files, dict):
        raise ApiError(400, INVALID_BODY)
    if not all(v is None or isinstance(v, str) for v in files.values()):
        raise ApiError(400, INVALID_BODY)
    return ImportRequest(name, {k: v or "" for k, v in files.items()})


def check_upload_count(files: dict[str, Any]) -> None:
    if len(files) > MAX_UPLOAD_FILES:
        raise ApiError(400, f"too many files ({len(files)}), max {MAX_UPLOAD_FILES}")


def confined_tree(files: dict[str, str]) -> dict[str, bytes]:
    """Validated, normalised relpath → bytes; 400 `invalid request body` for any bad path.

    `validate_rel_path` is the reference's rule; the writer additionally refuses backslashes and
    file/directory clashes (`a` and `a/b`), and two spellings of one path (`a/./b`, `a/b`).
    """
    tree: dict[str, bytes] = {}
    for rel, content in files.items():
        clean = clean_rel_path(rel) if validate_rel_path(rel) else None
        if clean is None or clean in tree:
            raise ApiError(400, INVALID_BODY)
        tree[clean] = content.encode("utf-8", "replace")
    try:
        check_tree(list(tree))
    except UnsafePath:
        raise ApiError(400, INVALID_BODY) from None
    return tree


def import_template(settings: Settings, req: ImportRequest) -> dict[str, Any]:
    """Create `<configs_dir>/<normalize_name(name)>` from the request (blocking; run in a thread)."""
    check_upload_count(req.files)
    dir_name = normalize_name(req.name)
    configs_dir = settings.configs_dir
    if not is_plain_name(dir_name):  # normalize_name leaves only [a-z0-9_-]; this is its length limit
        raise ApiError(400, INVALID_BODY)
    dest = configs_dir / dir_name
    if dest.exists() or dest.is_symlink():
        raise ApiError(409, "template already exists", id=dir_name)
    tree = confined_tree(req.files)
    if "config.yaml" not in tree:
        tree["config.yaml"] = generate_default_config(req.name, list(tree)).encode()
    try:
        configs_dir.mkdir(parents=True, exist_ok=True)
        dest.mkdir(mode=0o755)  # atomic: a concurrent import of the same name gets the 409
    except FileExistsError:
        raise ApiError(409, "template already exists", id=dir_name) from None
    try:
        write_tree(dest, tree, mode=IMPORTED_FILE_MODE)
    except (OSError, UnsafePath):
        log.exception("template import into %s failed", dest)
        with contextlib.suppress(OSError):
            shutil.rmtree(dest)
        raise ApiError(500, "failed to write template") from None
    clear_template_caches()  # provision timeouts and runtimes are re-read with the new template
    return {"id": dir_name, "name": req.name, "status": "imported"}
