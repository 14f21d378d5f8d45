"""Provision hooks: env mutators run on a workspace's env just before its start (spec 02 §5).

The orchestrator builds the env (secrets, git identity, model env, `MOLECULE_AGENT_ROLE`), then calls
`registry.run(ws_id, env, info)`; each mutator may add or overwrite keys and sees the earlier mutators'
changes. The first failure aborts the chain as `MutatorError` (`provisionhook "<name>": …`); the
orchestrator then fails the workspace with the generic `plugin env mutator chain failed`.

Built in: gh-identity, which attributes what an agent writes on GitHub to its role.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from workspace_server.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvisionInfo:
    """What a mutator may want to know about the workspace beyond its env."""

    name: str = ""
    role: str | None = None
    runtime: str = ""
    tier: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class EnvMutator(Protocol):
    @property
    def name(self) -> str: ...

    async def mutate_env(self, ws_id: str, env: dict[str, str], ctx_info: ProvisionInfo | None) -> None: ...


class MutatorError(Exception):
    """A mutator failed; the chain stopped there."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f'provisionhook "{name}": {cause}')
        self.mutator = name
        self.cause = cause


class MutatorRegistry:
    """Ordered mutators. `register(None)` is ignored; duplicates are kept (the reference does not dedupe)."""

    def __init__(self) -> None:
        self._mutators: list[EnvMutator] = []

    def register(self, mutator: EnvMutator | None) -> None:
        if mutator is not None:
            self._mutators.append(mutator)

    def __len__(self) -> int:
        return len(self._mutators)

    def names(self) -> list[str]:
        return [m.name for m in self._mutators]

    def mutators(self) -> list[EnvMutator]:
        return list(self._mutators)  # a copy: callers cannot reorder the chain

    async def run(self, ws_id: str, env: dict[str, str], ctx_info: ProvisionInfo | None = None) -> None:
        for m in self._mutators:
            try:
                await m.mutate_env(ws_id, env, ctx_info)
            except Exception as exc:
                raise MutatorError(m.name, exc) from exc


async def run_mutators(
    registry: MutatorRegistry | None, ws_id: str, env: dict[str, str], ctx_info: ProvisionInfo | None = None
) -> None:
    """Nil-safe entry point: no registry means nothing to run."""
    if registry is not None:
        await registry.run(ws_id, env, ctx_info)


# ---- gh-identity ----

GH_WRAPPER_SCRIPT = r"""#!/usr/bin/env bash
# Molecule gh wrapper, installed as `gh` ahead of the real binary on PATH.
# With MOLECULE_AGENT_ROLE set, `gh issue|pr create|comment|review` get the attribution badge prepended to
# --body, and `--assignee @me` on issue/pr commands becomes MOLECULE_OWNER (dropped when no owner is
# configured). Without a role, or for any other command, every argument passes through unchanged.
set -euo pipefail

find_real_gh() {
  if [ -n "${MOLECULE_GH_REAL:-}" ]; then printf '%s\n' "$MOLECULE_GH_REAL"; return 0; fi
  local self dir cand
  self="$(readlink -f "$0" 2>/dev/null || printf '%s' "$0")"
  local IFS=:
  for dir in ${PATH:-}; do
    cand="$dir/gh"
    [ -x "$cand" ] || continue
    [ "$(readlink -f "$cand" 2>/dev/null || printf '%s' "$cand")" = "$self" ] && continue
    printf '%s\n' "$cand"
    return 0
  done
  return 1
}

GH="$(find_real_gh)" || { echo "gh wrapper: no real gh found on PATH" >&2; exit 127; }

case "${1:-}" in
  issue|pr) ;;
  *) exec "$GH" "$@" ;;
esac
if [ -z "${MOLECULE_AGENT_ROLE:-}" ]; then exec "$GH" "$@"; fi

badge="${MOLECULE_ATTRIBUTION_BADGE:-}"
owner="${MOLECULE_OWNER:-}"
stamp_body=0
case "${2:-}" in create|comment|review) stamp_body=1 ;; esac
# sets $stamped (not a $(...) capture, which would eat the body's trailing newlines)
stamp() {
  stamped="$1"
  if [ "$stamp_body" = 1 ] && [ -n "$badge" ]; then stamped="$badge"$'\n\n'"$1"; fi
}

out=()
while [ $# -gt 0 ]; do
  arg="$1"
  shift
  case "$arg" in
    --assignee|-a|--body|-b)
      val="${1:-}"
      if [ $# -gt 0 ]; then shift; fi
      case "$arg" in
        --body|-b) stamp "$val"; out+=("$arg" "$stamped") ;;
        *)
          if [ "$val" != "@me" ]; then out+=("$arg" "$val")
          elif [ -n "$owner" ]; then out+=("$arg" "$owner")
          fi
          ;;
      esac
      ;;
    --assignee=@me) if [ -n "$owner" ]; then out+=("--assignee=$owner"); fi ;;
    --body=*) stamp "${arg#--body=}"; out+=("--body=$stamped") ;;
    *) out+=("$arg") ;;
  esac
done
exec "$GH" ${out[@]+"${out[@]}"}
"""

GH_WRAPPER_B64 = base64.b64encode(GH_WRAPPER_SCRIPT.encode()).decode()
GH_WRAPPER_SHA = hashlib.sha256(GH_WRAPPER_SCRIPT.encode()).hexdigest()[:12]


class HookConfigError(Exception):
    """A provision hook's configuration cannot be used (start-up is refused, as the reference does)."""


@dataclass(frozen=True)
class GhIdentityConfig:
    """`roles: {<role>: {owner: <github user>}}`; the reserved `default` role covers unlisted roles."""

    roles: dict[str, str] = field(default_factory=dict)

    def resolve_owner(self, role: str) -> str:
        needle = role.lower()
        for name, owner in self.roles.items():
            if name != "default" and name.lower() == needle and owner:
                return owner
        return self.roles.get("default", "")


def _owners(doc: dict[str, Any] | None, path: str) -> dict[str, str]:
    roles = (doc or {}).get("roles")
    if roles is None:
        return {}
    if not isinstance(roles, dict):
        raise HookConfigError(f"gh-identity config {path}: `roles` must be a mapping")
    out: dict[str, str] = {}
    for name, entry in roles.items():
        if entry is not None and not isinstance(entry, dict):
            raise HookConfigError(f"gh-identity config {path}: role {name!r} must be a mapping")
        owner = (entry or {}).get("owner")
        if isinstance(owner, dict | list):
            raise HookConfigError(f"gh-identity config {path}: owner of role {name!r} must be a string")
        out[str(name)] = "" if owner is None else str(owner)
    return out


def load_gh_identity_config(path: str) -> GhIdentityConfig:
    """No path or a missing file: an empty config (owners resolve to ""). Unreadable or malformed: error."""
    if not path:
        return GhIdentityConfig()
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return GhIdentityConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise HookConfigError(f"gh-identity config {path}: cannot read ({type(exc).__name__})") from None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise HookConfigError(f"gh-identity config {path}: not valid YAML") from None
    if doc is not None and not isinstance(doc, dict):
        raise HookConfigError(f"gh-identity config {path}: expected a mapping at the top level")
    return GhIdentityConfig(_owners(doc, path))


def sanitize_role(raw: str) -> str:
    """Trim, then upper-case the first letter of each `-` segment (`" pmm-lead "` → `Pmm-Lead`)."""
    parts = raw.strip().split("-")
    return "-".join(p[:1].upper() + p[1:] for p in parts) if raw.strip() else ""


def short_id(ws_id: str) -> str:
    bare = ws_id.removeprefix("ws-")
    return "ws-" + bare[:8]


class GhIdentityMutator:
    """Role → attribution env for the gh wrapper. No role: no change. Never fails a provision."""

    def __init__(self, config: GhIdentityConfig | None = None) -> None:
        self.config = config or GhIdentityConfig()

    @property
    def name(self) -> str:
        return "gh-identity"

    async def mutate_env(
        self, ws_id: str, env: dict[str, str], ctx_info: ProvisionInfo | None = None
    ) -> None:
        # the orchestrator puts the workspace role in env first; the info is a fallback for callers that don't
        raw = env.get("MOLECULE_AGENT_ROLE") or (ctx_info.role if ctx_info and ctx_info.role else "")
        role = sanitize_role(raw)
        if not role:
            return
        env["MOLECULE_AGENT_ROLE"] = role
        env["MOLECULE_OWNER"] = self.config.resolve_owner(role)
        env["MOLECULE_WORKSPACE_ID"] = ws_id
        env["MOLECULE_ATTRIBUTION_BADGE"] = f"🤖 [Agent: {role} · {short_id(ws_id)}]"
        env["MOLECULE_GH_WRAPPER_B64"] = GH_WRAPPER_B64
        env["MOLECULE_GH_WRAPPER_SHA"] = GH_WRAPPER_SHA


def default_mutators(settings: Settings) -> MutatorRegistry:
    """The boot-time chain: gh-identity always. Raises HookConfigError for an unusable config file."""
    registry = MutatorRegistry()
    registry.register(GhIdentityMutator(load_gh_identity_config(settings.MOLECULE_GH_IDENTITY_CONFIG_FILE)))
    log.info("provision hooks: %s", ", ".join(registry.names()))
    return registry
