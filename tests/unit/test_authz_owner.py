"""`workspace_server/authz/` is the only module that decides who may act for a workspace (issue 12 item 4).

An AST check over `src/workspace_server/**/*.py`: outside the authz package (and `auth/tokens.py`, the
token store it calls, which defines the lookups) no module may

- call a token lookup or comparison helper (`validate_workspace_token`, `validate_org_token`,
  `has_live_token`, `any_live_token`, `constant_time_equals`) or the session verifier;
- compare a `token_hash` column or value (`t.c.token_hash == …`), or hold SQL text comparing one
  (`token_hash = …`);
- read the `ADMIN_TOKEN` setting (`settings.ADMIN_TOKEN`, `os.environ["ADMIN_TOKEN"]`, `getenv`), except
  `config.py`, which defines it and derives the modes from it.

Each exception below names why it is not an authorization decision. The checker is tested on snippets
first, so a silent checker cannot pass the real source.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "workspace_server"
OWNERS = {"authz/__init__.py", "authz/actor.py", "auth/tokens.py"}

LOOKUPS = {
    "validate_workspace_token",
    "validate_org_token",
    "has_live_token",
    "any_live_token",
    "constant_time_equals",
    "verify_cp_session",
}
_SQL_HASH_COMPARE = re.compile(r"\btoken_hash\s*(?:=|!=|<>|\bIN\b)", re.IGNORECASE)

# (module, finding) -> why it is not a decision about a caller
ALLOWED = {
    (
        "registry/service.py",
        "call has_live_token",
    ): "first-token mint: issuance inside the mint's transaction",
    ("provisioner/store.py", "compare token_hash"): "revoke every token but the one just written",
    ("config.py", "read ADMIN_TOKEN"): "defines the setting and the modes derived from it",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def findings(source: str) -> set[str]:
    """What in `source` decides about a caller's credentials."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            callee = _name(node.func)
            if callee in LOOKUPS:
                found.add(f"call {callee}")
            if callee in ("getenv", "get") and any(
                isinstance(a, ast.Constant) and a.value == "ADMIN_TOKEN" for a in node.args
            ):
                found.add("read ADMIN_TOKEN")
        elif isinstance(node, ast.Compare):
            if any(_name(n) == "token_hash" for n in (node.left, *node.comparators)):
                found.add("compare token_hash")
        elif isinstance(node, ast.Attribute) and node.attr == "ADMIN_TOKEN":
            found.add("read ADMIN_TOKEN")
        elif isinstance(node, ast.Subscript):
            key = node.slice
            if isinstance(key, ast.Constant) and key.value == "ADMIN_TOKEN":
                found.add("read ADMIN_TOKEN")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _SQL_HASH_COMPARE.search(node.value):
                found.add("compare token_hash")
    return found


def test_checker_sees_each_form() -> None:
    assert findings("await tokens.validate_workspace_token(conn, b, ws)") == {"call validate_workspace_token"}
    assert findings("has_live_token(conn, ws)") == {"call has_live_token"}
    assert findings("ok = constant_time_equals(b, s.ADMIN_TOKEN)") == {
        "call constant_time_equals",
        "read ADMIN_TOKEN",
    }
    assert findings("q = sa.select(t.c.id).where(t.c.token_hash == h)") == {"compare token_hash"}
    assert findings("if row.token_hash != h: pass") == {"compare token_hash"}
    assert findings('SQL = "SELECT 1 FROM t WHERE t.token_hash = :h"') == {"compare token_hash"}
    assert findings('SQL = """JOIN x ON x.token_hash IN (:a)"""') == {"compare token_hash"}
    assert findings('os.environ["ADMIN_TOKEN"]') == {"read ADMIN_TOKEN"}
    assert findings('os.getenv("ADMIN_TOKEN", "")') == {"read ADMIN_TOKEN"}
    assert findings('os.environ.get("ADMIN_TOKEN")') == {"read ADMIN_TOKEN"}
    # storing a hash, hashing a bearer, naming the setting in prose: no decision
    assert findings("sa.insert(t).values(token_hash=hash_token(tok))") == set()
    assert findings('HELP = "set ADMIN_TOKEN before exposing this server"') == set()
    assert findings('"""the token_hash column is sha256"""') == set()


def test_only_authz_decides_who_may_act_for_a_workspace() -> None:
    offenders: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in OWNERS or rel.startswith("db/migrations/"):
            continue
        for finding in sorted(findings(path.read_text())):
            if (rel, finding) in ALLOWED:
                used.add((rel, finding))
            else:
                offenders.append(f"{rel}: {finding}")
    assert offenders == [], "decide in workspace_server/authz, not here:\n" + "\n".join(offenders)
    assert used == set(ALLOWED), f"stale exceptions: {set(ALLOWED) - used}"


def test_authz_does_not_import_the_web_framework() -> None:
    # services and hot routes call it without fastapi; import-linter states it too (pyproject)
    for rel in ("authz/__init__.py", "authz/actor.py"):
        tree = ast.parse((SRC / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(n.split(".")[0] in ("fastapi", "starlette") for n in names), (rel, names)
