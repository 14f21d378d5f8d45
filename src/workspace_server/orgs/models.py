"""The org.yaml document (spec 06 §3.5) as pydantic models.

Parsed after `!include` expansion (or from the inline JSON `template`), so a wrong type anywhere is one
clear "invalid org template" instead of a crash halfway through an import. YAML `key:` with no value is
null, which here means "not given" (the default), as Go's zero values do for the reference.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_NODES = 1000
MAX_DOC_ITEMS = 200_000
MAX_DEPTH = 100  # nesting of values; keeps validation and the import walk far from the recursion limit


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class MemorySeed(_Doc):
    content: str = ""
    scope: str = ""


class Canvas(_Doc):
    x: float = 0.0
    y: float = 0.0

    @field_validator("x", "y")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("not finite")
        return v


class Schedule(_Doc):
    name: str = ""
    cron_expr: str = ""
    timezone: str = ""
    prompt: str = ""
    prompt_file: str = ""
    enabled: bool = True


class Channel(_Doc):
    type: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    allowed_users: list[str] = Field(default_factory=list)
    enabled: bool = True


class _PromptFields(_Doc):
    model: str = ""
    runtime: str = ""
    tier: int = 0
    plugins: list[str] = Field(default_factory=list)
    initial_prompt: str = ""
    initial_prompt_file: str = ""
    idle_prompt: str = ""
    idle_prompt_file: str = ""
    idle_interval_seconds: int = 0
    category_routing: dict[str, list[str]] = Field(default_factory=dict)
    initial_memories: list[MemorySeed] = Field(default_factory=list)


class Defaults(_PromptFields):
    pass


class Node(_PromptFields):
    name: str = ""
    role: str = ""
    template: str = ""
    files_dir: str = ""
    system_prompt: str = ""
    workspace_dir: str = ""
    workspace_access: str = ""
    max_concurrent_tasks: int = 0
    schedules: list[Schedule] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=list)
    external: bool = False
    url: str = ""
    canvas: Canvas = Field(default_factory=Canvas)
    required_env: list[Any] = Field(default_factory=list)
    recommended_env: list[Any] = Field(default_factory=list)
    children: list[Node] = Field(default_factory=list)


class OrgTemplate(_Doc):
    name: str = ""
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    workspaces: list[Node] = Field(default_factory=list)
    global_memories: list[MemorySeed] = Field(default_factory=list)
    required_env: list[Any] = Field(default_factory=list)
    recommended_env: list[Any] = Field(default_factory=list)


def too_large(doc: Any) -> bool:
    """More than MAX_DOC_ITEMS values (aliases counted each time), MAX_NODES workspaces or MAX_DEPTH levels.

    Checked before validation: YAML aliases can make a small file describe an enormous tree.
    """
    items = nodes = 0
    stack: list[tuple[Any, bool, int]] = [(doc, False, 0)]
    while stack:
        value, is_node, depth = stack.pop()
        items += 1
        nodes += is_node
        if items > MAX_DOC_ITEMS or nodes > MAX_NODES or depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            for key, child in value.items():
                if key in ("workspaces", "children") and isinstance(child, list):
                    stack.extend((c, True, depth + 2) for c in child)
                else:
                    stack.append((child, False, depth + 1))
        elif isinstance(value, list):
            stack.extend((c, False, depth + 1) for c in value)
    return False


def iter_nodes(nodes: list[Node]) -> list[Node]:
    """Every node, pre-order."""
    out: list[Node] = []
    for node in nodes:
        out.append(node)
        out.extend(iter_nodes(node.children))
    return out
