"""Template discovery under `settings.configs_dir` (spec 02 §4).

A template is a directory holding `config.yaml`. The create flow needs three facts from templates: where
a named template lives (confined to configs_dir), which runtime/model it declares, and the per-runtime
provision timeout some templates declare (`runtime_config.provision_timeout_seconds`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from workspace_server.common.paths import resolve_inside_root
from workspace_server.config import Settings
from workspace_server.workspaces.files import MAX_NAME_BYTES, MAX_PATH_BYTES

log = logging.getLogger(__name__)

FALLBACK_RUNTIMES = (
    "langgraph",
    "claude-code",
    "openclaw",
    "crewai",
    "autogen",
    "deepagents",
    "hermes",
    "codex",
    "gemini-cli",
    "external",
)
MANIFEST_CANDIDATES = ("/app/manifest.json", "manifest.json", "../manifest.json", "../../manifest.json")
TIMEOUT_CACHE_SECONDS = 30.0


def resolve_template(settings: Settings, template: str) -> Path | None:
    """The template directory for `template`, or None when the name is empty, absolute or escapes."""
    return resolve_inside_root(settings.configs_dir, template)


def scan_runtime_and_model(config_text: str) -> tuple[str, str]:
    """(runtime, model) declared by a template's config.yaml, "" when absent.

    The reference's line scan, kept because it tolerates files YAML would reject: an unindented
    `runtime:` (not `runtime_config:`), and an unindented `model:` (legacy) or a `model:` indented inside
    the `runtime_config:` block. The first occurrence of each wins; quotes around the model are stripped.
    """
    runtime = model = ""
    in_runtime_config = False
    for raw_line in config_text.split("\n"):
        trimmed = raw_line.lstrip(" \t")
        indented = len(raw_line) > len(trimmed)
        if not indented:
            in_runtime_config = trimmed.startswith("runtime_config:")
        stripped = raw_line.strip()
        if not runtime and not indented and stripped.startswith("runtime:"):
            runtime = stripped[len("runtime:") :].strip()
        elif not model and stripped.startswith("model:") and (not indented or in_runtime_config):
            model = stripped[len("model:") :].strip().strip("\"'")
        if runtime and model:
            break
    return runtime, model


def read_template_runtime_and_model(template_dir: Path) -> tuple[str, str]:
    """Line-scan `<template_dir>/config.yaml`; a missing or unreadable file declares nothing."""
    try:
        text = (template_dir / "config.yaml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", ""
    return scan_runtime_and_model(text)


_known_runtimes: frozenset[str] | None = None


def known_runtimes() -> frozenset[str]:
    """Runtimes from manifest.json `workspace_templates[].name` (minus `-default`), plus `external`."""
    global _known_runtimes
    if _known_runtimes is None:
        _known_runtimes = _load_manifest_runtimes() or frozenset(FALLBACK_RUNTIMES)
    return _known_runtimes


def _load_manifest_runtimes() -> frozenset[str] | None:
    for cand in MANIFEST_CANDIDATES:
        try:
            data: Any = json.loads(Path(cand).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        names = {"external"}
        for entry in data.get("workspace_templates") or [] if isinstance(data, dict) else []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name:
                names.add(name.removesuffix("-default"))
        return frozenset(names)
    return None


def sanitize_runtime(runtime: str) -> str:
    """Empty or unknown runtimes become `langgraph`; used only for paths and generated YAML."""
    rt = runtime.strip()
    return rt if rt in known_runtimes() else "langgraph"


def runtime_default_dir(settings: Settings, runtime: str) -> Path:
    return settings.configs_dir / f"{sanitize_runtime(runtime)}-default"


def load_provision_timeouts(configs_dir: Path) -> dict[str, int]:
    """runtime -> seconds from every `<configs_dir>/*/config.yaml`; duplicates keep the maximum."""
    out: dict[str, int] = {}
    try:
        entries = sorted(p for p in configs_dir.iterdir() if p.is_dir())
    except OSError:
        return out
    for entry in entries:
        try:
            raw = yaml.safe_load((entry / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(raw, dict):
            continue
        runtime = raw.get("runtime")
        rc = raw.get("runtime_config")
        secs = rc.get("provision_timeout_seconds") if isinstance(rc, dict) else None
        if not isinstance(runtime, str) or not runtime or isinstance(secs, bool) or not isinstance(secs, int):
            continue
        if secs > 0 and secs > out.get(runtime, 0):
            out[runtime] = secs
    return out


# configs_dir -> (monotonic time loaded, map); the sweeper asks every cycle, so keep a short cache.
_timeout_cache: dict[Path, tuple[float, dict[str, int]]] = {}


async def runtime_provision_timeouts(settings: Settings) -> dict[str, int]:
    configs_dir = settings.configs_dir
    hit = _timeout_cache.get(configs_dir)
    now = time.monotonic()
    if hit is not None and now - hit[0] < TIMEOUT_CACHE_SECONDS:
        return hit[1]
    loaded = await asyncio.to_thread(load_provision_timeouts, configs_dir)
    _timeout_cache[configs_dir] = (now, loaded)
    return loaded


async def provision_timeout_seconds_for(settings: Settings, runtime: str) -> int | None:
    """The template-declared provision timeout for `runtime` (max over templates), or None."""
    return (await runtime_provision_timeouts(settings)).get(runtime)


def clear_template_caches() -> None:
    """For tests and template imports: forget cached scans."""
    global _known_runtimes
    _timeout_cache.clear()
    _known_runtimes = None


# ---- names and relative paths (spec 02 §4), shared by template import, the files API and restarts ----


def normalize_name(name: str) -> str:
    """A display name as a template dir name: `Agent v2.0` → `agent-v20`, `../hack` → `hack`.

    Spaces and `-` become `-`; ASCII letters are lower-cased; `[a-z0-9_]` is kept; everything else is
    dropped; `..` is removed; an empty result is `unnamed`.
    """
    out: list[str] = []
    for ch in name:
        if ch in (" ", "-"):
            out.append("-")
        elif "A" <= ch <= "Z":
            out.append(ch.lower())
        elif "a" <= ch <= "z" or "0" <= ch <= "9" or ch == "_":
            out.append(ch)
    result = "".join(out).replace("..", "")
    return result or "unnamed"


def validate_rel_path(rel: str) -> bool:
    """The reference's `validateRelPath`: not empty, not `.`, not absolute, no `..` anywhere.

    (It allows `.env`, `foo/./bar` and `C:\\x`.) We also refuse NUL, which no filesystem accepts.
    """
    return bool(rel) and rel != "." and not rel.startswith("/") and ".." not in rel and "\x00" not in rel


def clean_rel_path(rel: str) -> str | None:
    """`rel` validated and normalised (`a//./b` → `a/b`), or None when invalid, naming the root, or longer
    than a file system takes (a component over MAX_NAME_BYTES, the whole over MAX_PATH_BYTES)."""
    if not validate_rel_path(rel):
        return None
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    clean = "/".join(parts)
    if len(clean.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES or any(
        len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts
    ):
        return None
    return clean or None


def _config_name(config_text: str) -> str:
    """The first `name:` line's value (the reference's quick scan), surrounding quotes removed."""
    for line in config_text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("name:"):
            return stripped[len("name:") :].strip().strip("\"'")
    return ""


def find_template_by_name(configs_dir: Path, name: str) -> Path | None:
    """A template dir for workspace `name`: dir `name` lower-cased with spaces → `-`, else one whose
    config.yaml `name:` equals it case-insensitively (`ws-*` dirs skipped). Symlinked dirs are ignored."""
    try:
        entries = sorted(e for e in configs_dir.iterdir() if e.is_dir() and not e.is_symlink())
    except OSError:
        return None
    wanted = name.lower().replace(" ", "-")
    for entry in entries:
        if entry.name == wanted:
            return entry
    folded = name.casefold()
    for entry in entries:
        if entry.name.startswith("ws-"):
            continue
        try:
            text = (entry / "config.yaml").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if _config_name(text).casefold() == folded:
            return entry
    return None


def resolve_workspace_template_dir(settings: Settings, workspace_name: str) -> Path | None:
    """The reference's `resolveTemplateDir`: `<configs>/<normalize_name(name)>`, else a name match."""
    configs_dir = settings.configs_dir
    by_dir = resolve_inside_root(configs_dir, normalize_name(workspace_name))
    if by_dir is not None and by_dir.is_dir():
        return by_dir
    return find_template_by_name(configs_dir, workspace_name)
