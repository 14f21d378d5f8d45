"""Env requirements of an org template (spec 06 §3.5 "Env collection"), for the listing and the preflight.

A requirement is a name (`"OPENAI_API_KEY"`) or a group of alternatives (`{"any_of": [...]}`), the same
shape in YAML and JSON. The org and every node may declare `required_env` and `recommended_env`; the
listing shows their union, cleaned: names must look like env names (a template is untrusted text that
reaches the UI and the secrets form), duplicates go (groups compared as sets), and a strict requirement
makes weaker entries that mention the same name redundant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")

# A requirement: a single name, or a sorted tuple of alternatives.
Req = str | tuple[str, ...]


class EnvSpecError(ValueError):
    """A malformed requirement (e.g. an empty `any_of`): the template is invalid."""


def parse_requirement(raw: Any) -> Req | None:
    """One entry as written; None when nothing valid is left (bad names are dropped)."""
    if isinstance(raw, str):
        return raw if NAME_RE.match(raw) else None
    if isinstance(raw, dict) and "any_of" in raw:
        members = raw["any_of"]
        if not isinstance(members, list) or not members:
            raise EnvSpecError("any_of must be a non-empty list")
        names = sorted({m for m in members if isinstance(m, str) and NAME_RE.match(m)})
        return tuple(names) if names else None
    raise EnvSpecError("env requirement must be a name or {any_of: [...]}")


def parse_list(raw: Any) -> list[Req]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise EnvSpecError("env requirements must be a list")
    return [req for req in (parse_requirement(item) for item in raw) if req is not None]


def _dedup(reqs: Iterable[Req]) -> list[Req]:
    out: list[Req] = []
    for req in reqs:
        if req not in out:
            out.append(req)
    return out


def _without_dominated(reqs: list[Req], strict: set[str]) -> list[Req]:
    """Groups that contain a strict name of the same tier are already satisfied by it."""
    return [r for r in reqs if isinstance(r, str) or not strict.intersection(r)]


def _sorted(reqs: list[Req]) -> list[Req]:
    singles = sorted(r for r in reqs if isinstance(r, str))
    groups = sorted(r for r in reqs if isinstance(r, tuple))
    return [*singles, *groups]


def collect(required: Iterable[Req], recommended: Iterable[Req]) -> tuple[list[Req], list[Req]]:
    """(required, recommended) cleaned as the listing shows them."""
    req = _dedup(required)
    rec = _dedup(recommended)
    strict_req = {r for r in req if isinstance(r, str)}
    req = _without_dominated(req, strict_req)
    rec = [r for r in rec if not strict_req.intersection((r,) if isinstance(r, str) else r)]
    rec = _without_dominated(rec, {r for r in rec if isinstance(r, str)})
    return _sorted(req), _sorted(rec)


def to_json(reqs: list[Req]) -> list[Any]:
    return [r if isinstance(r, str) else {"any_of": list(r)} for r in reqs]


def missing(required: list[Req], configured: set[str]) -> list[Req]:
    """Requirements no configured key satisfies (a group needs any one member)."""
    return [r for r in required if not configured.intersection((r,) if isinstance(r, str) else r)]
