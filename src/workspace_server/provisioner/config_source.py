"""Where a workspace's `/configs` comes from, and what the config asks for (spec 01 §4.2, §4.4; 02 §4).

- the generated default `config.yaml` (create without a usable template, or an empty volume);
- the restart template rules (`resolve_restart_template`): explicit template, name match, org template,
  runtime default, else reuse the volume (a plain restart never overwrites user config);
- the `runtime_config.required_env` preflight and its exact messages.
All YAML is read with `safe_load`; user text is written as JSON-quoted scalars, so no injection (#685).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workspace_server.common.paths import resolve_inside_root
from workspace_server.config import Settings
from workspace_server.provisioner.runtimes import RuntimeImages
from workspace_server.workspaces.files import read_file, subdirs
from workspace_server.workspaces.templates import known_runtimes, resolve_template

EXISTING_VOLUME = "existing-volume"
ORG_TEMPLATES = "org-templates"
DEFAULT_MODEL = "anthropic:claude-opus-4-7"
CLAUDE_CODE_MODEL = "sonnet"
NO_TIMEOUT_RUNTIMES = ("langgraph", "deepagents")
_RUNTIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$")


def config_runtime(runtime: str, images: RuntimeImages) -> str:
    """The runtime written into a generated config: a known one (manifest or image registry), else langgraph.

    The image registry counts too, so `echo` stays `echo` (sanitizing it to langgraph would make the next
    restart read `runtime: langgraph` back from the volume and switch the image).
    """
    rt = runtime.strip()
    return rt if rt in known_runtimes() or rt in images.known() else "langgraph"


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML); newlines become spaces, CRs vanish."""
    return json.dumps(text.replace("\r", "").replace("\n", " "), ensure_ascii=False)


def default_config_yaml(
    name: str, role: str, tier: int, runtime: str, model: str, images: RuntimeImages
) -> bytes:
    """The reference's generated config.yaml (never with required_env, #1028)."""
    rt = config_runtime(runtime, images)
    model = model or (CLAUDE_CODE_MODEL if rt == "claude-code" else DEFAULT_MODEL)
    lines = [
        f"name: {_quoted(name)}",
        f"description: {_quoted(role)}",
        "version: 1.0.0",
        f"tier: {int(tier)}",
        f"runtime: {rt}",
        f"model: {_quoted(model)}",
    ]
    if rt not in NO_TIMEOUT_RUNTIMES:
        lines += ["runtime_config:", "  timeout: 0"]
    return ("\n".join(lines) + "\n").encode()


def _load(config: bytes | None) -> dict[str, Any] | None:
    if not config:
        return None
    try:
        data = yaml.safe_load(config.decode("utf-8", errors="replace"))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def declared_runtime(config: bytes | None) -> str:
    """Top-level `runtime:` of a config.yaml when it is a plausible runtime name, else ""."""
    data = _load(config)
    rt = data.get("runtime") if data else None
    return rt.strip() if isinstance(rt, str) and _RUNTIME_RE.match(rt.strip()) else ""


def required_env(config: bytes | None) -> list[str]:
    """`runtime_config.required_env` names; malformed YAML declares nothing (spec 01 §5)."""
    data = _load(config)
    rc = data.get("runtime_config") if data else None
    names = rc.get("required_env") if isinstance(rc, dict) else None
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n]


def missing_env(config: bytes | None, env: dict[str, str]) -> list[str]:
    """Required names that are absent or empty in `env` (an empty string counts as missing)."""
    return [n for n in required_env(config) if not env.get(n)]


def missing_env_message(missing: list[str]) -> str:
    if len(missing) == 1:
        return (
            f'missing required env var "{missing[0]}" — add it under Config → Env Vars '
            "(or as a Global secret) and retry"
        )
    return (
        f"missing required env vars {', '.join(missing)} — add them under Config → Env Vars "
        "(or as Global secrets) and retry"
    )


def template_config(template_dir: Path | None) -> bytes | None:
    if template_dir is None:
        return None
    return read_file(template_dir, "config.yaml")


def append_yaml(base: bytes, blocks: str) -> bytes | None:
    """`blocks` (top-level keys) appended to the config.yaml `base`, as the reference appends org blocks;
    None when the result would not be one mapping holding exactly those values (a flow-style or broken
    base), so a template's config is never silently corrupted. A key the base already has is overridden
    (the later key wins when the agent reads the file)."""
    text = base.decode("utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text += "\n"
    merged = text + blocks
    try:
        data, added = yaml.safe_load(merged), yaml.safe_load(blocks)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not isinstance(added, dict):
        return None
    if any(data.get(k) != v for k, v in added.items()):
        return None
    return merged.encode()


# ---- restart template rules ----


@dataclass(frozen=True)
class RestartBody:
    template: str = ""
    apply_template: bool = False
    reset: bool = False
    rebuild_config: bool = False


def parse_restart_body(data: Any) -> RestartBody | None:
    """The optional restart body; None when it is not an object or a field has the wrong type."""
    if data is None:
        return RestartBody()
    if not isinstance(data, dict):
        return None
    template = data.get("template") or ""
    flags = {k: data.get(k) for k in ("apply_template", "reset", "rebuild_config")}
    if not isinstance(template, str) or any(
        v is not None and not isinstance(v, bool) for v in flags.values()
    ):
        return None
    return RestartBody(template, *(bool(v) for v in flags.values()))


def normalize_name(name: str) -> str:
    """Template dir name of a workspace name (`Agent v2.0` → `agent-v20`, `../hack` → `hack`)."""
    out = []
    for ch in name.strip().lower():
        if ch in " -":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch == "_"):
            out.append(ch)
    return "".join(out).replace("..", "") or "unnamed"


def _config_name(template_dir: Path) -> str:
    data = _load(read_file(template_dir, "config.yaml"))
    name = data.get("name") if data else None
    return name.strip() if isinstance(name, str) else ""


def find_by_name(root: Path, ws_name: str) -> Path | None:
    """A template under `root` named after the workspace: its normalized dir name, else a config `name:`."""
    direct = resolve_inside_root(root, normalize_name(ws_name))
    if direct is not None and (direct / "config.yaml").is_file():
        return direct
    wanted = ws_name.strip().lower()
    for entry in subdirs(root):
        if entry.startswith("ws-"):
            continue
        if wanted and _config_name(root / entry).lower() == wanted:
            return root / entry
    return None


def resolve_restart_template(
    settings: Settings, ws_name: str, db_runtime: str, body: RestartBody, images: RuntimeImages
) -> tuple[Path | None, str]:
    """(template dir or None = reuse the volume, label). First match wins (spec 02 §4)."""
    root = settings.configs_dir
    if body.template:
        explicit = resolve_template(settings, body.template)
        if explicit is not None and explicit.is_dir():
            return explicit, body.template
    if body.apply_template:
        named = find_by_name(root, ws_name)
        if named is not None:
            return named, named.name
    if body.rebuild_config:
        org = find_by_name(root / ORG_TEMPLATES, ws_name)
        if org is not None:
            return org, f"{ORG_TEMPLATES}/{org.name}"
    if body.apply_template and db_runtime:
        label = f"{config_runtime(db_runtime, images)}-default"
        default = resolve_inside_root(root, label)
        if default is not None and default.is_dir():
            return default, label
    return None, EXISTING_VOLUME


def runtime_fallback(settings: Settings, runtime: str, images: RuntimeImages) -> Path | None:
    """For an empty config volume: `<runtime>-default`, then `<runtime>` (spec 01 §4.2 step 5)."""
    rt = config_runtime(runtime, images)
    for name in (f"{rt}-default", rt):
        cand = resolve_inside_root(settings.configs_dir, name)
        if cand is not None and (cand / "config.yaml").is_file():
            return cand
    return None
