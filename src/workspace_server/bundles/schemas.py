"""The portable `.bundle.json` format (spec 06 §3.4).

Decoding follows the reference's JSON binding: unknown keys are ignored, `null` means the zero value,
and a value of the wrong JSON type makes the whole bundle invalid (strict types: no "3" for a tier).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict

MAX_DEPTH = 32  # sub_workspaces nesting; deeper is refused before validation recurses


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_zero(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# what service.config_files / check_tree accept as a skill id and a relative path (documentation only)
_PLAIN_NAME: JsonDict = {"pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$"}
_REL_PATHS: JsonDict = {
    "propertyNames": {"pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"}
}


class BundleSkill(_Lenient):
    model_config = ConfigDict(json_schema_extra={"required": ["id"]})  # documented: config_files needs it

    id: str = Field("", json_schema_extra=_PLAIN_NAME)
    name: str = ""
    description: str = ""
    files: dict[str, str] = Field(
        default_factory=dict, json_schema_extra=_REL_PATHS
    )  # relative path -> content


class BundleTool(_Lenient):
    id: str = ""
    config: dict[str, Any] = Field(default_factory=dict)


class Bundle(_Lenient):
    model_config = ConfigDict(json_schema_extra={"required": ["name"]})  # documented: _tree_problem needs it

    schema_: str = Field("", alias="schema")
    id: str = ""
    # json_schema_extra: the rules service._tree_problem adds, documented in /openapi.json
    name: str = Field("", json_schema_extra={"pattern": r"\S", "minLength": 1})
    description: str = ""
    tier: int = Field(0, json_schema_extra={"minimum": -(2**31), "maximum": 2**31 - 1})
    model: str = ""
    system_prompt: str = ""
    skills: list[BundleSkill] = Field(default_factory=list)
    tools: list[BundleTool] = Field(default_factory=list)
    prompts: dict[str, str] = Field(default_factory=dict)
    sub_workspaces: list[Bundle] = Field(default_factory=list, json_schema_extra={"maxItems": 2})
    agent_card: Any = None
    author: str = ""
    version: str = ""


def nesting_depth(data: Any) -> int:
    """Depth of the raw `sub_workspaces` tree, measured without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        subs = node.get("sub_workspaces") if isinstance(node, dict) else None
        if isinstance(subs, list):
            stack.extend((s, depth + 1) for s in subs)
    return deepest
