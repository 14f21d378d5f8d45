"""A plugin's `plugin.yaml`, read into the item the plugin endpoints return (spec 06 §3.2).

Parsing is forgiving on purpose: the file comes from a third party or from a workspace the agent can
write to, so a bad or hostile file yields an item with empty fields, never an error. Only strings are
taken; list members that are not strings are skipped; empty lists are `null` on the wire.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MANIFEST_FILE = "plugin.yaml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")  # the local source's rule for a plugin name
_SCALARS = ("version", "description", "author")
_LISTS = ("tags", "skills", "runtimes")


def is_handler_name(name: str) -> bool:
    """The handlers' rule (spec 06 §3.2): non-empty, no `/` `\\` `..`, and its own basename."""
    return bool(name) and "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name


def load_manifest(raw: bytes | None) -> dict[str, Any]:
    """The YAML mapping of a plugin.yaml, {} when missing, unparsable or not a mapping."""
    if not raw:
        return {}
    try:
        data = yaml.safe_load(raw.decode("utf-8", "replace"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _string_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    items = [v for v in value if isinstance(v, str)]
    return items or None


def plugin_item(name: str, raw: bytes | None, runtime: str | None = None) -> dict[str, Any]:
    """`{"name","version","description","author","tags","skills","runtimes"[,"supported_on_runtime"]}`."""
    data = load_manifest(raw)
    item: dict[str, Any] = {"name": name}
    for key in _SCALARS:
        value = data.get(key)
        item[key] = value if isinstance(value, str) else ""
    for key in _LISTS:
        item[key] = _string_list(data.get(key))
    if runtime is not None:
        item["supported_on_runtime"] = supports_runtime(item, runtime)
    return item


def _norm_runtime(value: str) -> str:
    return value.strip().lower().replace("-", "_")


def supports_runtime(item: dict[str, Any], runtime: str) -> bool:
    """Empty `runtimes` means every runtime; names compare after `-` → `_`."""
    runtimes = item.get("runtimes") or []
    if not runtimes:
        return True
    want = _norm_runtime(runtime)
    return any(_norm_runtime(r) == want for r in runtimes)
