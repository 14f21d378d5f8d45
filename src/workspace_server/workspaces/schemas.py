"""Request payloads and the field rules of spec 01 §4.1/§5.

Payloads are parsed strictly (a string where the reference expects an int is a 400, as Go's decoder makes
it), and JSON `null` means "not given", as it does for Go's zero values.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workspace_server.common.jsonnum import storable_json

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

NAME_MAX, ROLE_MAX, MODEL_MAX, RUNTIME_MAX = 255, 1000, 100, 100
YAML_SPECIAL_CHARS = "{}[]|>*&!"
WORKSPACE_ACCESS_VALUES = ("none", "read_only", "read_write")
BLOCKED_WORKSPACE_DIRS = ("/etc", "/var", "/proc", "/sys", "/dev", "/boot", "/sbin", "/bin", "/lib", "/usr")

Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
# what workspace_fields_error lets through, as JSON-schema patterns for /openapi.json
LINE_PATTERN = "^[^\\n\\r\\u0000]*$"
FIELD_PATTERN = "^[^\\n\\r\\u0000{}\\[\\]|>*&!]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class CanvasPos(_Strict):
    x: float | None = None
    y: float | None = None

    @field_validator("x", "y")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("not finite")
        return v


class InitialMemory(_Strict):
    content: str | None = None
    scope: str | None = None


class CreateWorkspace(_Strict):
    name: str | None = None
    role: str | None = None
    template: str | None = None
    tier: Int32 | None = None
    model: str | None = None
    runtime: str | None = None
    external: bool | None = None
    url: str | None = None
    workspace_dir: str | None = None
    workspace_access: str | None = None
    parent_id: str | None = None
    budget_limit: Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)] | None = None
    secrets: dict[str, str] | None = None
    max_concurrent_tasks: Int32 | None = None
    canvas: CanvasPos | None = None
    initial_memories: list[InitialMemory] | None = None

    def strings(self) -> list[str]:
        """Every free-text value the caller sent (for the NUL check)."""
        values = [
            self.name,
            self.role,
            self.template,
            self.model,
            self.runtime,
            self.url,
            self.workspace_dir,
            self.workspace_access,
            self.parent_id,
        ]
        for k, v in (self.secrets or {}).items():
            values += [k, v]
        return [v for v in values if v]


def workspace_fields_error(name: str, role: str, model: str, runtime: str) -> str | None:
    """The reference's field rule (#685 YAML injection, #688 caps); its message, or None if valid.

    Lengths are in bytes, as Go's len(). NUL and lone surrogates are refused too: Postgres TEXT cannot
    hold them.
    """
    fields = (("name", name), ("role", role), ("model", model), ("runtime", runtime))
    for label, val in fields:
        if "\n" in val or "\r" in val:
            return f"{label} must not contain newline characters"
    for label, val in fields[:2]:
        if any(c in val for c in YAML_SPECIAL_CHARS):
            return f"{label} contains invalid characters"
    for label, val in fields:
        if not storable_json(val):  # NUL, or a lone surrogate (which has no UTF-8 encoding either)
            return f"{label} contains invalid characters"
    for label, val, cap in (
        ("name", name, NAME_MAX),
        ("role", role, ROLE_MAX),
        ("model", model, MODEL_MAX),
        ("runtime", runtime, RUNTIME_MAX),
    ):
        if len(val.encode()) > cap:
            return f"{label} must be at most {cap} characters"
    return None


def workspace_dir_ok(path: str) -> bool:
    """Absolute, no `..` anywhere, and not a system directory or below one."""
    if not path.startswith("/") or ".." in path or "\x00" in path:
        return False
    clean = posixpath.normpath(path)
    if clean.startswith("//"):  # POSIX keeps a leading `//`; Go's Clean does not
        clean = "/" + clean.lstrip("/")
    return not any(clean == b or clean.startswith(b + "/") for b in BLOCKED_WORKSPACE_DIRS)


def workspace_access_ok(access: str, workspace_dir: str) -> bool:
    if access in ("", "none"):
        return True
    return access in WORKSPACE_ACCESS_VALUES and bool(workspace_dir)


@dataclass(frozen=True)
class ConfigOverlay:
    """Extra config for a workspace's first start (org import, spec 06 §3.5 step 6): never from an HTTP body.

    `files` land in /configs on top of the template (a node's `files_dir`, `system-prompt.md`, staged
    plugins as `plugins/<name>/…`); `config_append` is YAML appended to the config.yaml in effect (the
    files' own, else the template's, else the generated default). Only the first start uses it: a restart
    reuses what the volume holds, so the applied config persists as any user edit would.
    """

    files: Mapping[str, bytes] = field(default_factory=dict)
    config_append: str = ""


@dataclass(frozen=True)
class ProvisionSpec:
    """What the create flow hands to the provisioner hook (`ctx.provisioner`).

    `template_path` is the first existing config source (the named template, else
    `<runtime>-default`); None means "generate a default config".
    """

    workspace_id: str
    name: str
    role: str
    tier: int
    runtime: str
    model: str
    template: str
    template_path: Path | None
    workspace_dir: str
    workspace_access: str
    parent_id: str | None
    overlay: ConfigOverlay | None = None


def as_number(value: Any) -> float | None:
    """A JSON number (not a bool) that is finite, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        v = float(value)
    except OverflowError:  # an integer literal beyond float range
        return None
    return v if math.isfinite(v) else None
