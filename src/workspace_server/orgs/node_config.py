"""What an org node writes into its workspace's config (spec 06 §3.5 step 6), as a `ConfigOverlay`.

- `files_dir`: the node's directory inside the template, copied on top of the workspace template
  (symlinks skipped, `.env` left out: its values become encrypted secrets, never a plain file);
- `system_prompt` → `system-prompt.md`;
- config.yaml blocks: `category_routing` (defaults ∪ node, a node key replaces, an empty list deletes),
  `initial_prompt` and `idle_prompt` (+ `idle_interval_seconds`), each node inline → node file →
  defaults inline → defaults file;
- `plugins` (defaults ∪ node, `!x`/`-x` removes x) staged by the plugins service from the registry,
  through the same name, size and integrity checks as `POST /workspaces/:id/plugins`.

What truly cannot be applied is reported per node, never silently dropped: `config_skipped`
`[{"workspace","key","reason"}]` and `plugins_skipped` `[{"workspace","plugin","reason"}]` (an external
node or a server without backend writes no config; an unreadable or escaping file; a plugin missing
from the registry). Prompts are written as YAML block scalars like the reference's, checked to parse
back to exactly the prompt (else written JSON-quoted), so no prompt text can add or change a key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workspace_server.common.errors import ApiError
from workspace_server.context import AppContext
from workspace_server.orgs.models import Defaults, Node
from workspace_server.orgs.sources import read_side_file
from workspace_server.plugins import service as plugins
from workspace_server.plugins.sources import staged_size
from workspace_server.provisioner.config_source import append_yaml
from workspace_server.workspaces.files import read_tree
from workspace_server.workspaces.schemas import ConfigOverlay

DEFAULT_IDLE_INTERVAL = 600  # seconds, the agent runtime's own default
INLINE = "inline template: there is no template directory to read it from"
UNREADABLE = "file not found inside the template (or unreadable, or over 1 MiB)"
NOT_A_DIR = "not a directory inside the template"
TOO_LARGE = "files_dir exceeds the size limit"
NOT_FOUND = "plugin not found in the plugins registry"
NOT_MERGEABLE = "the files_dir config.yaml is not a YAML block mapping to append it to"
PROMPT_KEYS = ("initial_prompt", "initial_prompt_file", "idle_prompt", "idle_prompt_file")


@dataclass
class NodeConfig:
    overlay: ConfigOverlay | None = None
    config_skipped: list[dict[str, str]] = field(default_factory=list)
    plugins_skipped: list[dict[str, str]] = field(default_factory=list)


def merged_plugins(defaults: list[str], node: list[str]) -> list[str]:
    """defaults ∪ node, deduplicated; a node entry `!x` or `-x` removes x."""
    removed = {p[1:] for p in node if p[:1] in ("!", "-")}
    out: list[str] = []
    for name in [*defaults, *node]:
        if name and name[:1] not in ("!", "-") and name not in removed and name not in out:
            out.append(name)
    return out


def merged_routing(defaults: dict[str, list[str]], node: dict[str, list[str]]) -> dict[str, list[str]]:
    """A node key replaces the defaults' key; a node key with an empty list deletes it; keys sorted."""
    out = dict(defaults)
    for key, roles in node.items():
        if roles:
            out[key] = roles
        else:
            out.pop(key, None)
    return {k: out[k] for k in sorted(out) if out[k]}


def requested_keys(node: Node, defaults: Defaults) -> list[str]:
    """The config keys a node asks for (its own or through the defaults), in a stable order."""
    keys = [k for k in ("files_dir", "system_prompt") if getattr(node, k)]
    if merged_routing(defaults.category_routing, node.category_routing):
        keys.append("category_routing")
    keys += [k for k in PROMPT_KEYS if getattr(node, k) or getattr(defaults, k)]
    return keys


def skip_all(node: Node, defaults: Defaults, reason: str) -> NodeConfig:
    """Nothing can be written for this node (external, or no backend): every request reported."""
    out = NodeConfig()
    out.config_skipped = [_cfg_skip(node, k, reason) for k in requested_keys(node, defaults)]
    plugin_names = merged_plugins(defaults.plugins, node.plugins)
    out.plugins_skipped = [_plugin_skip(node, p, reason) for p in plugin_names]
    return out


def _cfg_skip(node: Node, key: str, reason: str) -> dict[str, str]:
    return {"key": key, "reason": reason, "workspace": node.name}


def _plugin_skip(node: Node, plugin: str, reason: str) -> dict[str, str]:
    return {"plugin": plugin, "reason": reason, "workspace": node.name}


# ---------------------------------------------------------------- YAML blocks


def _literal(key: str, text: str) -> str:
    """`key: |` with 2-space indented lines (the reference's form), or a JSON-quoted scalar when the
    block would not read back as exactly `text` (YAML line breaks such as U+2028, tabs, control chars)."""
    lines = [line.rstrip(" \t") for line in text.strip().split("\n")]
    block = f"{key}: |\n" + "".join(f"  {line}\n" if line else "\n" for line in lines)
    want = "\n".join(lines) + "\n"
    try:
        if yaml.safe_load(block) == {key: want}:
            return block
    except yaml.YAMLError:
        pass
    return f"{key}: {json.dumps(want)}\n"  # ensure_ascii: every non-ASCII char escaped


def routing_block(routing: dict[str, list[str]]) -> str:
    """`category_routing:` with flow lists; keys and roles JSON-quoted (valid YAML, nothing injectable)."""
    rows = "".join(f"  {json.dumps(k)}: {json.dumps(v)}\n" for k, v in routing.items())
    return f"category_routing:\n{rows}"


# ---------------------------------------------------------------- the builder


@dataclass
class _Builder:
    ctx: AppContext
    node: Node
    defaults: Defaults
    root: Path | None
    node_dir: Path | None
    out: NodeConfig = field(default_factory=NodeConfig)
    files: dict[str, bytes] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)

    def skip(self, key: str, reason: str) -> None:
        self.out.config_skipped.append(_cfg_skip(self.node, key, reason))

    def prompt(self, inline: str, file_key: str, owner: Node | Defaults, base: Path | None) -> str:
        """Inline text, else the file (confined to the template); an unreadable file is reported."""
        if inline.strip():
            return inline
        rel = getattr(owner, file_key)
        if not rel:
            return ""
        if self.root is None or base is None:
            self.skip(file_key, INLINE)
            return ""
        text = read_side_file(self.root, base, rel)
        if text is None:
            self.skip(file_key, UNREADABLE)
            return ""
        return text

    def resolve(self, name: str) -> str:
        """node inline → node file → defaults inline → defaults file (defaults' files from the root)."""
        node_base = self.node_dir or self.root
        text = self.prompt(getattr(self.node, name), f"{name}_file", self.node, node_base)
        if not text.strip():
            text = self.prompt(getattr(self.defaults, name), f"{name}_file", self.defaults, self.root)
        return text.strip()

    def files_dir(self) -> None:
        if not self.node.files_dir:
            return
        if self.root is None:
            self.skip("files_dir", INLINE)
        elif self.node_dir is None:
            self.skip("files_dir", NOT_A_DIR)
        elif staged_size(self.node_dir) > self.ctx.settings.plugin_max_dir_bytes:
            self.skip("files_dir", TOO_LARGE)
        else:
            tree = read_tree(self.node_dir)
            self.files.update({rel: data for rel, data in tree.items() if rel != ".env"})

    def config_blocks(self) -> None:
        if self.node.system_prompt:
            self.files["system-prompt.md"] = self.node.system_prompt.encode()
        routing = merged_routing(self.defaults.category_routing, self.node.category_routing)
        if routing:
            self.blocks.append(routing_block(routing))
        initial = self.resolve("initial_prompt")
        if initial:
            self.blocks.append(_literal("initial_prompt", initial))
        idle = self.resolve("idle_prompt")
        if idle:
            interval = self.node.idle_interval_seconds or self.defaults.idle_interval_seconds
            interval = interval if interval > 0 else DEFAULT_IDLE_INTERVAL
            self.blocks.append(f"idle_interval_seconds: {int(interval)}\n" + _literal("idle_prompt", idle))
        self._check_mergeable()

    def _check_mergeable(self) -> None:
        """A files_dir config.yaml the blocks cannot be appended to is known here, so it is reported
        (the orchestrator would keep it unchanged and could only log)."""
        base = self.files.get("config.yaml")
        if not self.blocks or base is None or append_yaml(base, "".join(self.blocks)) is not None:
            return
        for key in ("category_routing", "initial_prompt", "idle_prompt"):
            if any(block.startswith(key) or f"\n{key}:" in block for block in self.blocks):
                self.skip(key, NOT_MERGEABLE)
        self.blocks.clear()


Stager = Callable[[str], Awaitable[plugins.Staged]]


def stager(ctx: AppContext) -> Stager:
    """Stages each plugin name once per import (outcome cached, errors included): nodes that share a
    plugin share its bytes instead of each holding a copy until their first start."""
    cache: dict[str, plugins.Staged | ApiError] = {}

    async def stage(name: str) -> plugins.Staged:
        if name not in cache:
            try:
                cache[name] = await plugins.stage_registry_plugin(ctx, name)
            except ApiError as exc:
                cache[name] = exc
        got = cache[name]
        if isinstance(got, ApiError):
            raise got
        return got

    return stage


async def _plugins(b: _Builder, stage: Stager) -> None:
    """Staged by the plugins service. The org allowlist is not consulted: it is keyed on the parent
    workspace, which this import has just created (no allowlist rows yet, so it would allow anyway)."""
    for name in merged_plugins(b.defaults.plugins, b.node.plugins):
        try:
            staged = await stage(name)
        except ApiError as exc:
            reason = NOT_FOUND if exc.status == 404 else str(exc.body.get("error") or "plugin not staged")
            b.out.plugins_skipped.append(_plugin_skip(b.node, name, reason))
            continue
        b.files.update(plugins.config_payload(staged))


async def build(
    ctx: AppContext, node: Node, defaults: Defaults, root: Path | None, node_dir: Path | None, stage: Stager
) -> NodeConfig:
    """The overlay for one node's first start plus the skip records (file reads off the event loop)."""
    b = _Builder(ctx, node, defaults, root, node_dir)
    await asyncio.to_thread(b.files_dir)
    await asyncio.to_thread(b.config_blocks)
    await _plugins(b, stage)
    if b.files or b.blocks:
        b.out.overlay = ConfigOverlay(files=b.files, config_append="".join(b.blocks))
    return b.out


def result_fields(cfg: NodeConfig) -> dict[str, Any]:
    """The node's result entries: only the skip lists that have something in them."""
    out: dict[str, Any] = {}
    if cfg.config_skipped:
        out["config_skipped"] = cfg.config_skipped
    if cfg.plugins_skipped:
        out["plugins_skipped"] = cfg.plugins_skipped
    return out
