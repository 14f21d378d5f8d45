"""Background tasks have one owner (issue 12 §2): only `common/tasks.py` starts tasks.

Any other `create_task` / `ensure_future` / `TaskGroup` in `src/` fails this test, except the few
per-request helpers listed below, each marked on its line with an `# unsupervised:` comment saying why:
tasks awaited and cancelled by the call that created them before it returns (or one read shared by
concurrent requests that await it), which are no background work.
"""

from __future__ import annotations

import ast
from pathlib import Path

import workspace_server

SRC = Path(workspace_server.__file__).parent
OWNER = "common/tasks.py"
SPAWNERS = frozenset({"create_task", "ensure_future", "TaskGroup"})
# module -> how many marked per-request uses it may have
ALLOWED = {
    "events/ws.py": 2,  # a WebSocket client's send pump and inbound reader
    "terminal/service.py": 2,  # a terminal session's output and input pumps
    "a2a/caches.py": 1,  # TargetCache: one row read shared by the requests awaiting it
    "serving.py": 1,  # a hot request's task, started where uvicorn starts each request's own
}
MARK = "# unsupervised:"


def _spawn_lines(tree: ast.AST) -> list[int]:
    lines: list[int] = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Name):
            name = node.id
        if name in SPAWNERS:
            lines.append(node.lineno)
    return sorted(set(lines))


def test_only_the_supervisor_starts_tasks() -> None:
    found: dict[str, list[int]] = {}
    unmarked: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == OWNER:
            continue
        text = path.read_text()
        lines = _spawn_lines(ast.parse(text))
        if not lines:
            continue
        found[rel] = lines
        source = text.splitlines()
        for n in lines:
            here, before = source[n - 1], source[n - 2] if n > 1 else ""
            if MARK not in here and not before.strip().startswith(MARK):
                unmarked.append(f"{rel}:{n}: {here.strip()}")
    assert not unmarked, "start background work with ctx.tasks.spawn (common/tasks.py):\n" + "\n".join(
        unmarked
    )
    extra = {m: len(n) for m, n in found.items() if len(n) > ALLOWED.get(m, 0)}
    assert not extra, f"task starts outside common/tasks.py beyond the allowed per-request ones: {extra}"


def test_the_check_sees_every_spelling() -> None:
    sample = (
        "import asyncio\n"
        "asyncio.create_task(f())\n"
        "loop.create_task(f())\n"
        "asyncio.ensure_future(f())\n"
        "from asyncio import create_task\n"
        "create_task(f())\n"
        "async def g():\n"
        "    async with asyncio.TaskGroup() as tg:\n"
        "        tg.create_task(f())\n"
    )
    assert _spawn_lines(ast.parse(sample)) == [2, 3, 4, 6, 8, 9]
