"""`workspaces/lifecycle.py` is the only writer of `workspaces.status` (DESIGN §2, issue 12 item 3).

An AST check over `src/workspace_server/**/*.py`: outside the lifecycle no module may

- build `update(workspaces)…values(status=…)` (keyword, `{"status": …}` / `{workspaces.c.status: …}` key,
  or `**{"status": …}`), directly or through a variable holding such a statement;
- upsert `insert(workspaces)…on_conflict_do_update(set_={"status": …})` (the conflict branch is an UPDATE);
- pass `status=` to the generic column writer `workspaces/store.update_columns`;
- hold SQL text `UPDATE workspaces … SET … status = …`.

INSERTs of a new row with its initial status are creation, not a change, and stay in their stores
(`workspaces/store.insert_workspace`, `registry/store.upsert_registration`). The checker is tested on
snippets first, so a silent checker cannot pass the real source.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from workspace_server.db.schema import WORKSPACE_STATUSES
from workspace_server.workspaces.lifecycle import LIVE_STATUSES, Status

SRC = Path(__file__).resolve().parents[2] / "src" / "workspace_server"
OWNER = SRC / "workspaces" / "lifecycle.py"
TABLE = "workspaces"
GENERIC_WRITERS = {"update_columns"}  # helpers that forward **values into an UPDATE of workspaces

_SQL_UPDATE = re.compile(
    r"UPDATE\s+workspaces\b(?:\s+(?:AS\s+)?\w+)?\s+SET\s+(?P<set>.*?)(?:\bFROM\b|\bWHERE\b|\bRETURNING\b|;|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_SQL_STATUS = re.compile(r"(?:^|[\s,.])status\s*=", re.IGNORECASE)


def _table_aliases(tree: ast.AST) -> set[str]:
    """Names bound to the workspaces table anywhere in the module (`w = workspaces`,
    `a, w = agents, workspaces`)."""
    names = {TABLE}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs: list[tuple[ast.expr, ast.expr]] = []
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(target.elts, node.value.elts, strict=False))
            else:
                pairs = [(target, node.value)]
            for t, v in pairs:
                if isinstance(t, ast.Name) and isinstance(v, ast.Name) and v.id == TABLE:
                    names.add(t.id)
    return names


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _root(expr: ast.expr) -> ast.expr:
    """The start of a method chain: `sa.update(w).where(…).values(…)` → the `sa.update(w)` call."""
    while True:
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            inner = expr.func.value
            if isinstance(inner, ast.Call | ast.Name) and not (
                isinstance(inner, ast.Name) and _callee(expr) in {"update", "insert"}
            ):
                expr = inner
                continue
        return expr


def _is_table_call(expr: ast.expr, kinds: set[str], aliases: set[str]) -> bool:
    return (
        isinstance(expr, ast.Call)
        and _callee(expr) in kinds
        and bool(expr.args)
        and isinstance(expr.args[0], ast.Name)
        and expr.args[0].id in aliases
    )


def _stmt_on(root: ast.expr, kind: str, aliases: set[str], holders: set[str]) -> bool:
    """`root` is `update(workspaces)` / `insert(workspaces)`, or a name already holding such a statement."""
    return _is_table_call(root, {kind}, aliases) or (isinstance(root, ast.Name) and root.id in holders)


def _scopes(tree: ast.Module) -> Iterator[list[ast.stmt]]:
    yield tree.body
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.body


def _walk_scope(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Nodes of one scope, not descending into nested functions (they are scopes of their own)."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _sets_status(call: ast.Call) -> bool:
    for kw in call.keywords:
        if kw.arg == "status":
            return True
        if kw.arg is None and isinstance(kw.value, ast.Dict) and _dict_has_status(kw.value):
            return True
    return any(isinstance(a, ast.Dict) and _dict_has_status(a) for a in call.args)


def _dict_has_status(d: ast.Dict) -> bool:
    for key in d.keys:
        if isinstance(key, ast.Constant) and key.value == "status":
            return True
        if isinstance(key, ast.Attribute) and key.attr == "status":
            return True
    return any(  # {**{"status": …}}: look into the literal
        isinstance(v, ast.Dict) and _dict_has_status(v)
        for k, v in zip(d.keys, d.values, strict=True)
        if k is None
    )


def status_writes(source: str, filename: str = "<src>") -> list[str]:
    """`file:line what` for every write of workspaces.status the rules above forbid."""
    tree = ast.parse(source, filename)
    aliases = _table_aliases(tree)
    found: list[str] = []
    for body in _scopes(tree):
        updates: set[str] = set()  # names holding an update(workspaces) / insert(workspaces) statement
        upserts: set[str] = set()
        nodes = list(_walk_scope(body))
        for _ in range(3):  # `stmt = …; stmt = stmt.where(…)`: a few rounds reach the fixpoint
            for node in nodes:
                if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                    continue
                target, root = node.targets[0], _root(node.value)
                if isinstance(target, ast.Name) and _stmt_on(root, "update", aliases, updates):
                    updates.add(target.id)
                if isinstance(target, ast.Name) and _stmt_on(root, "insert", aliases, upserts):
                    upserts.add(target.id)
        for node in nodes:
            if not isinstance(node, ast.Call):
                continue
            name = _callee(node)
            where = f"{filename}:{node.lineno}"
            if name == "values" and _sets_status(node) and isinstance(node.func, ast.Attribute):
                root = _root(node.func.value)
                if _stmt_on(root, "update", aliases, updates):
                    found.append(f"{where} update(workspaces).values(status=…)")
            if name == "on_conflict_do_update" and isinstance(node.func, ast.Attribute):
                root = _root(node.func.value)
                is_ws = _stmt_on(root, "insert", aliases, upserts)
                set_ = next((k.value for k in node.keywords if k.arg == "set_"), None)
                if is_ws and isinstance(set_, ast.Dict) and _dict_has_status(set_):
                    found.append(f"{where} insert(workspaces).on_conflict_do_update(set_={{'status': …}})")
            if name in GENERIC_WRITERS and _sets_status(node):
                found.append(f"{where} {name}(status=…)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in _SQL_UPDATE.finditer(node.value):
                if _SQL_STATUS.search(" " + m.group("set")):
                    found.append(f"{filename}:{node.lineno} SQL text UPDATE workspaces SET status")
    return found


# ---- the checker itself


def test_checker_finds_each_kind_of_write() -> None:
    bad = {
        "keyword": "sa.update(workspaces).where(workspaces.c.id == i).values(status='x')",
        "alias": "w = workspaces\ndef f():\n    return sa.update(w).values(status='x', url='')",
        "tuple alias": "a, w = agents, workspaces\nq = update(w).values(status='x')",
        "dict key": "sa.update(workspaces).values({'status': 'x'})",
        "column key": "sa.update(workspaces).values({workspaces.c.status: 'x'})",
        "double star": "sa.update(workspaces).values(**{'status': 'x'})",
        "via a variable": "async def f(c):\n    stmt = sa.update(workspaces)\n    stmt = stmt.where(x)\n"
        "    await c.execute(stmt.values(status='x'))",
        "upsert": "s = insert(workspaces).values(id=1, status='online')\n"
        "s = s.on_conflict_do_update(index_elements=[], set_={'status': 'online'})",
        "generic writer": "await store.update_columns(conn, ws_id, status='online')",
        "sql text": "sa.text('UPDATE workspaces SET url = :u, status = :s WHERE id = :i')",
        "sql text alias": "Q = '''\n  UPDATE workspaces w SET\n"
        "    updated_at = :now, status = 'online'\n  FROM g'''",
    }
    for what, src in bad.items():
        assert status_writes(src), what


def test_checker_lets_other_writes_pass() -> None:
    ok = [
        "sa.insert(workspaces).values(id=i, status='provisioning')",  # creation
        "sa.update(agents).values(status='removed')",  # another table
        "sa.update(workspaces).values(url='', updated_at=now)",  # other columns
        "s = insert(workspaces).values(status='online')\ns = s.on_conflict_do_update(set_={'url': u})",
        "sa.text('UPDATE workspaces w SET url = :u FROM g WHERE w.status = :s')",  # status read, not set
        "sa.text('UPDATE a2a_queue SET status = :s')",
        "await store.update_columns(conn, ws_id, budget_limit=1)",
    ]
    for src in ok:
        assert not status_writes(src), src


# ---- the source


def test_no_module_but_the_lifecycle_updates_status() -> None:
    files = sorted(p for p in SRC.rglob("*.py") if p != OWNER)
    assert len(files) > 100  # the glob found the package
    found = [w for p in files for w in status_writes(p.read_text(), str(p.relative_to(SRC)))]
    assert not found, "status changes go through workspaces/lifecycle.py:\n" + "\n".join(found)


def test_the_lifecycle_itself_is_seen_writing() -> None:
    assert status_writes(OWNER.read_text(), "lifecycle.py")  # the checker reads the real idiom


def test_status_enum_is_the_schema_set() -> None:
    assert {s.value for s in Status} == set(WORKSPACE_STATUSES)
    assert Status.REMOVED == "removed" and f"{Status.ONLINE}" == "online"
    assert set(LIVE_STATUSES) == {"online", "degraded"}
