"""The closed Backend protocol (issue 12 §5): every backend implements the whole of it, and no caller
outside `provisioner/` tells backends apart by name or by class — it asks the backend instead."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from workspace_server.config import Settings
from workspace_server.provisioner.base import Backend
from workspace_server.provisioner.docker import DockerBackend
from workspace_server.provisioner.process import ProcessBackend
from workspace_server.provisioner.swarm import SwarmBackend

SRC = Path(__file__).resolve().parents[2] / "src" / "workspace_server"
PROVISIONER = SRC / "provisioner"
CONCRETE = (
    "workspace_server.provisioner.docker",
    "workspace_server.provisioner.process",
    "workspace_server.provisioner.swarm",
)


def backends() -> list[Any]:
    settings = Settings()
    return [  # no engine needed
        DockerBackend(settings, client=SimpleNamespace()),
        ProcessBackend(settings),
        SwarmBackend(settings, client=SimpleNamespace()),
    ]


def protocol_members() -> list[str]:
    own = {n for n in vars(Backend) if not n.startswith("_")} | set(Backend.__annotations__)
    return sorted(own | {n for n in vars(Backend.__mro__[1]) if not n.startswith("_")})


@pytest.mark.parametrize("backend", backends(), ids=lambda b: type(b).__name__)
def test_each_backend_satisfies_the_protocol(backend: Any) -> None:
    assert isinstance(backend, Backend)
    for member in protocol_members():
        assert hasattr(backend, member), f"{type(backend).__name__} lacks {member}"
        wanted = getattr(Backend, member, None)
        if not callable(wanted):
            continue
        got = getattr(type(backend), member)
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), member
        expected = list(inspect.signature(wanted).parameters)
        assert list(inspect.signature(got).parameters) == expected, f"{type(backend).__name__}.{member}"


def test_protocol_covers_what_callers_ask() -> None:
    for member in (
        "start", "stop", "is_running", "remove_volumes", "list_instances", "instance_url", "exec",
        "open_session", "logs", "write_config_files", "list_files", "read_file", "write_files",
        "delete_path", "read_live_config", "chat_files", "shares_host_network", "network_url",
        "dial_url", "pull_image", "image_users", "pulls_images", "close", "run_warm_pool",
        "drain_warm_pool",
    ):  # fmt: skip
        assert member in protocol_members(), member


def _outside_provisioner() -> list[Path]:
    return [p for p in SRC.rglob("*.py") if PROVISIONER not in p.parents]


def _mentions_backend(node: ast.AST) -> bool:
    return "backend" in ast.unparse(node).lower()


def name_branches(tree: ast.AST) -> list[str]:
    """Comparisons of a backend's `name` (`backend.name == "docker"`, `getattr(b, "name", "") != ...`,
    `match backend.name`), and isinstance checks against a concrete backend class."""
    found: list[str] = []
    for node in ast.walk(tree):
        operands: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Match):
            operands = [node.subject]
        for op in operands:
            for sub in ast.walk(op):
                if isinstance(sub, ast.Attribute) and sub.attr == "name" and _mentions_backend(sub.value):
                    found.append(ast.unparse(node))
                if (
                    isinstance(sub, ast.Call)
                    and isinstance(sub.func, ast.Name)
                    and sub.func.id == "getattr"
                    and len(sub.args) >= 2
                    and isinstance(sub.args[1], ast.Constant)
                    and sub.args[1].value == "name"
                    and _mentions_backend(sub.args[0])
                ):
                    found.append(ast.unparse(node))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance"
            and any(cls in ast.unparse(node) for cls in ("DockerBackend", "ProcessBackend", "SwarmBackend"))
        ):
            found.append(ast.unparse(node))
    return found


def test_no_caller_branches_on_a_backend_name() -> None:
    offenders = {
        str(path.relative_to(SRC)): hits
        for path in _outside_provisioner()
        if (hits := name_branches(ast.parse(path.read_text(), str(path))))
    }
    assert offenders == {}, "ask the backend (a Backend protocol member) instead of its name"


def test_no_caller_imports_a_concrete_backend() -> None:
    offenders: list[str] = []
    for path in _outside_provisioner():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(CONCRETE):
                offenders.append(f"{path.relative_to(SRC)}: from {node.module}")
            if isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(SRC)}: {a.name}" for a in node.names if a.name.startswith(CONCRETE)
                ]
    assert offenders == []


def test_the_name_check_catches_the_old_branches() -> None:
    old = [
        'if getattr(backend, "name", "") == "docker": pass',
        'x = backend is None or backend.name != "docker"',
        'x = self.backend.name == "process"',
        "x = isinstance(ctx.backend, DockerBackend)",
    ]
    for source in old:
        assert name_branches(ast.parse(source)), source
    assert not name_branches(ast.parse('x = row.name == "docker"'))
