"""The seven CanCommunicate rules over pre-fetched chains (spec 03 §2), no database."""

from __future__ import annotations

import pytest

from workspace_server.registry.access import Chain, decide

PARENTS = {
    "PM": None,
    "DevLead": "PM",
    "FE": "DevLead",
    "BE": "DevLead",
    "SecAud": "BE",
    "Marketing": "PM",
    "Ops": None,
}


def chains() -> dict[str, Chain]:
    out: dict[str, Chain] = {}
    for name, parent in PARENTS.items():
        ancestors: list[str] = []
        cur = parent
        while cur is not None:
            ancestors.append(cur)
            cur = PARENTS[cur]
        out[name] = Chain(parent_id=parent, ancestors=tuple(ancestors))
    return out


@pytest.mark.parametrize(
    ("caller", "target"),
    [
        ("FE", "BE"),  # siblings
        ("PM", "Ops"),  # roots
        ("DevLead", "FE"),  # parent -> child
        ("FE", "DevLead"),  # child -> parent
        ("PM", "SecAud"),  # ancestor -> descendant
        ("SecAud", "PM"),  # descendant -> ancestor
        ("DevLead", "Marketing"),
        ("BE", "SecAud"),
        ("ghost", "ghost"),  # same id, even unknown
    ],
)
def test_allowed(caller: str, target: str) -> None:
    assert decide(caller, target, chains())


@pytest.mark.parametrize(
    ("caller", "target"),
    [
        ("FE", "SecAud"),  # uncle -> nephew
        ("SecAud", "FE"),
        ("FE", "Marketing"),  # cousins once removed
        ("DevLead", "Ops"),
        ("FE", "Ops"),
        ("ghost", "PM"),
        ("PM", "ghost"),
    ],
)
def test_denied(caller: str, target: str) -> None:
    assert not decide(caller, target, chains())
