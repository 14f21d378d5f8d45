"""Schemathesis against a live server, over the schema the server publishes (`GET /openapi.json`).

Each database gets one run (the `db_url` fixture): a uvicorn server in production mode (ADMIN_TOKEN set),
seeded over HTTP with real rows (workspaces, tokens, a schedule, a memory, …) whose ids become the `enum`
of every path parameter, so generated requests reach the handlers instead of answering 404. Every
operation is then fuzzed twice: as the admin, and as workspace A with its own bearer token. Checks:
schemathesis's `not_a_server_error` (a 5xx is a failure unless it is a deliberate, documented 501/502/503/
504 of that operation — never a 500) and `response_schema_conformance` (every answer matches its
documented schema, the `{"error": …}` body of every error status included), plus
`status_code_conformance` (every status answered is documented: 201/202/207 where a route answers them).
A last, smaller pass sends data that violates the schema (schemathesis's negative mode), as the admin:
it must be refused with a documented 4xx, never answered with a 5xx.

Reproducible: Hypothesis runs derandomized (fixed seed) with `FUZZ_EXAMPLES` examples per operation and
identity (default 12; `FUZZ_NEGATIVE_EXAMPLES`, default 4, for the negative pass). The summary
(operations, cases, time, refusal ratio per operation) is printed; run with `-s` to see it:
`pytest tests/integration/test_openapi_fuzz.py -s -m fuzz`.
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(600)]  # a hard stop; a run takes about 2 min

ADMIN = "fuzz-admin-token"
PLUGIN = "fuzz-plugin"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
NEGATIVE_EXAMPLES = int(os.environ.get("FUZZ_NEGATIVE_EXAMPLES", "4"))
SEED = 20261206
# never fuzzed over plain HTTP: streams that do not end, WebSocket upgrades (described in the schema)
SKIP = re.compile(r"/(events/stream|mcp/stream|terminal)$|^/ws$")
# operations that stop, pause or delete a workspace: fuzzed by the admin only, on a workspace of their own
DESTRUCTIVE = re.compile(r"^/workspaces/\{id\}(/pause|/hibernate|/resume)?$")
ONE_SHOT = re.compile(r"^DELETE |/(pause|resume|hibernate|decide)$")
# statuses that mean "the generated request was refused before doing anything"
REFUSED = {400, 401, 403, 404, 413, 422}
# nearly all refused: at or above this ratio
NEARLY_ALL = 0.9
# operations whose generated data is knowingly refused almost always, and why (at most a handful)
EXPECTED_REFUSALS: dict[str, str] = {
    "POST /registry/register": "production mode resolves the agent URL's host and refuses private or "
    "unresolvable ones: this offline machine resolves none",
    "GET /workspaces/{id}/console": "the process backend runs no instance for an external workspace",
    "POST /workspaces/{id}/expand": "needs a workspace template with sub-workspaces (none is installed)",
    "POST /org/import": "needs an org template directory (none is installed)",
    "POST /channels/discover": "needs a Telegram bot token of the right form, then a reachable Telegram",
    "POST /webhooks/{type}": "every delivery must carry its provider's signature or secret",
    "POST /workspaces/{id}/channels": "a config must satisfy its adapter (token format, webhook URL prefix)",
}


@dataclass
class Seed:
    """Real ids, by what they name."""

    ws_a: str = ""
    ws_b: str = ""
    ws_doomed: str = ""
    ws_paused: str = ""
    ws_patched: str = ""
    ws_pausable: str = ""
    ws_online: str = ""
    token_a: str = ""
    spare_token_id: str = ""
    ids: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, value: Any) -> None:
        if isinstance(value, str) and value:
            self.ids.setdefault(kind, []).append(value)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def seed(base: str) -> Seed:
    """Rows every path parameter can name. Failures are reported, not fatal: a missing id only makes its
    operations answer 404 (which the refusal summary then shows)."""
    s = Seed()
    h = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=base, headers=h, timeout=30) as c:

        def post(path: str, body: Any, status: tuple[int, ...] = (200, 201)) -> Any:
            r = c.post(path, json=body)
            if r.status_code not in status:
                print(f"seed: POST {path} answered {r.status_code} {r.text[:200]}")
                return {}
            return _json(r) or {}

        def workspace(name: str, **extra: Any) -> str:
            body = {"name": name, "runtime": "external", "external": True, **extra}
            ws_id = str(post("/workspaces", body).get("id", ""))
            s.add("workspace", ws_id)
            return ws_id

        s.ws_a = workspace("fuzz-a")
        s.ws_b = workspace("fuzz-b", parent_id=s.ws_a)
        s.ws_doomed = workspace("fuzz-doomed")
        s.ws_paused = workspace("fuzz-paused")
        post(f"/workspaces/{s.ws_paused}/pause", None)
        s.ws_patched = workspace("fuzz-patched")
        s.ws_pausable = workspace("fuzz-pausable")
        # an agent URL makes an external workspace online at once: the one state hibernate accepts
        s.ws_online = workspace("fuzz-online", url="http://127.0.0.1:9/")
        s.token_a = str(post(f"/workspaces/{s.ws_a}/tokens", None).get("auth_token", ""))
        spare = str(post(f"/workspaces/{s.ws_a}/tokens", None).get("auth_token", ""))
        listed = _json(c.get(f"/workspaces/{s.ws_a}/tokens")) or {}
        for item in listed.get("tokens", []):
            if item.get("prefix") and spare.startswith(item["prefix"]):
                s.spare_token_id = str(item.get("id", ""))
        s.add("token", s.spare_token_id)
        a = f"/workspaces/{s.ws_a}"
        s.add(
            "schedule",
            post(f"{a}/schedules", {"name": "n", "cron_expr": "*/5 * * * *", "prompt": "p"}).get("id"),
        )
        s.add("memory", post(f"{a}/memories", {"content": "remember", "scope": "LOCAL"}).get("id"))
        hook = {"webhook_url": "https://hooks.slack.com/services/T0/B0/fuzz"}  # dialed where it is refused
        s.add("channel", post(f"{a}/channels", {"channel_type": "slack", "config": hook}).get("id"))
        post(f"{a}/memory", {"key": "k1", "value": {"v": 1}})
        s.add("key", "k1")
        s.add("approval", post(f"{a}/approvals", {"action": "deploy"}).get("approval_id"))
        post(f"{a}/checkpoints", {"workflow_id": "wf1", "step_name": "s", "step_index": 0})
        s.add("workflow", "wf1")
        s.add(
            "instruction",
            post("/instructions", {"scope": "global", "title": "t", "content": "c"}).get("id"),
        )
        record = {"target_id": s.ws_b, "task": "t", "delegation_id": "d1"}
        s.add("delegation", post(f"{a}/delegations/record", record, (202,)).get("delegation_id", "d1"))
        s.add("org_token", post("/org/tokens", {"name": "fuzz"}).get("id"))
        r = c.put(f"{a}/secrets", json={"key": "FUZZ_KEY", "value": "v"})
        if r.status_code >= 300:
            print(f"seed: PUT {a}/secrets answered {r.status_code} {r.text[:200]}")
        for key in ("GLOBAL_FUZZ", "GLOBAL_FUZZ_2"):
            post("/settings/secrets", {"key": key, "value": "v"})
            s.add("global_secret", key)
        s.add("secret", "FUZZ_KEY")
        post(f"{a}/agent", {"model": "fuzz-model"})
        for rel in ("config.yaml", "notes/a.txt"):
            r = c.put(f"{a}/files/{rel}", json={"content": "name: fuzz\n"})
            if r.status_code >= 300:
                print(f"seed: PUT {a}/files/{rel} answered {r.status_code} {r.text[:200]}")
        r = c.post(f"{a}/chat/uploads", files={"files": ("fuzz.txt", b"hello", "text/plain")})
        for item in (_json(r) or {}).get("files", []) if r.status_code < 300 else []:
            s.add("upload", str(item.get("uri", "")).removeprefix("workspace:"))
    return s


def _param_values(s: Seed, method: str, path: str, name: str) -> list[str] | None:
    """Real values for path parameter `name` of `path` (None: leave it to the generator)."""
    ids = s.ids
    if name == "id":
        if path.startswith("/org/tokens/"):
            return ids.get("org_token")
        if path.startswith("/orgs/"):
            return [s.ws_a]  # an org is named by its root workspace
        # each state-changing operation gets a workspace of its own, in the state it needs
        own = {
            ("delete", "/workspaces/{id}"): s.ws_doomed,
            ("patch", "/workspaces/{id}"): s.ws_patched,
            ("get", "/workspaces/{id}"): s.ws_patched,
            ("post", "/workspaces/{id}/resume"): s.ws_paused,
            ("post", "/workspaces/{id}/pause"): s.ws_pausable,
            ("post", "/workspaces/{id}/hibernate"): s.ws_online,
        }
        if (method, path) in own:
            return [own[(method, path)]]
        return [s.ws_a, s.ws_b]
    table: dict[str, list[str] | None] = {
        "ws_id": [s.ws_a, s.ws_b],
        "workspace_id": [s.ws_a, s.ws_b],
        "target_id": [s.ws_b, s.ws_a],
        "schedule_id": ids.get("schedule"),
        "memory_id": ids.get("memory"),
        "channel_id": ids.get("channel"),
        "approval_id": ids.get("approval"),
        "wfid": ids.get("workflow"),
        "instruction_id": ids.get("instruction"),
        "delegation_id": ids.get("delegation"),
        "token_id": [s.spare_token_id] if s.spare_token_id else None,
        "key": (ids.get("global_secret") or ["", ""])[:1]
        if path.startswith("/settings/")
        else (ids.get("global_secret") or ["", ""])[1:]
        if path.startswith("/admin/")
        else ids.get("secret")
        if "/secrets/" in path
        else ids.get("key"),
        "path": ["config.yaml", "notes/a.txt"],
        "name": [PLUGIN],
    }
    return table.get(name)


def fuzz_schema(doc: dict[str, Any], s: Seed, *, only_workspace: bool) -> dict[str, Any]:
    """The published schema with real ids as path-parameter enums (and, for the workspace identity, only
    the operations a workspace token can reach)."""
    doc = copy.deepcopy(doc)
    paths: dict[str, Any] = {}
    for path, item in doc["paths"].items():
        if SKIP.search(path):
            continue
        if only_workspace and not (path.startswith(("/workspaces/{id}", "/registry"))):
            continue
        for method, op in list(item.items()):
            admin_only = op.get("x-auth") == "admin"
            if only_workspace and (admin_only or (DESTRUCTIVE.search(path) and method != "get")):
                del item[method]
                continue
            for param in op.get("parameters", []):
                if param.get("in") == "query" and param["name"] == "path" and s.ids.get("upload"):
                    param["schema"] = {"type": "string", "enum": s.ids["upload"]}
                if param.get("in") != "path":
                    continue
                values = _param_values(s, method, path, param["name"])
                if only_workspace and param["name"] == "id":
                    values = [s.ws_a]
                if values:
                    param["schema"] = {"type": "string", "enum": values}
            item[method] = op
        _real_plugin(item)
        _external_only(path, item)
        if item:
            paths[path] = item
    doc["paths"] = paths
    _real_uuids(doc, [s.ws_a, s.ws_b])
    return doc


def _real_plugin(item: dict[str, Any]) -> None:
    """Plugin sources and names are ids too: the one plugin under the server's PLUGINS_DIR."""
    for op in item.values():
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        props = body.get("properties", {})
        if "source" in props:
            props["source"] = {"type": "string", "enum": [f"local://{PLUGIN}"]}
        if "plugins" in props:
            props["plugins"] = {"type": "array", "items": {"type": "string", "enum": [PLUGIN]}}


def _external_only(path: str, item: dict[str, Any]) -> None:
    """Created workspaces are external: the process backend would start an agent process for any other."""
    if path != "/workspaces" or "post" not in item:
        return
    ref = item["post"]["requestBody"]["content"]["application/json"]["schema"]
    item["post"]["requestBody"]["content"]["application/json"]["schema"] = {
        "allOf": [
            ref,
            {"type": "object", "required": ["external"], "properties": {"external": {"const": True}}},
        ]
    }


def _real_uuids(node: Any, ids: list[str]) -> None:
    """Every `format: uuid` string of a body names one of the seeded workspaces (bodies refer to
    workspaces only: target_id, workspace_id, parent_id, …)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "uuid":
            node["enum"] = list(ids)
        for value in node.values():
            _real_uuids(value, ids)
    elif isinstance(node, list):
        for value in node:
            _real_uuids(value, ids)


@dataclass
class Stats:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    refusals: dict[str, Counter[str]] = field(default_factory=dict)  # label -> "status body" -> count

    def refused_ratio(self, label: str) -> float:
        """Share of refused answers. A DELETE (or pause/resume/hibernate) that succeeded once rightly
        answers 404 to every later case naming the same row: those 404s do not count as refusals."""
        st = self.statuses.get(label, Counter())
        total = sum(st.values())
        refused = {*REFUSED}
        if ONE_SHOT.search(label) and any(200 <= code < 300 for code in st):
            refused.discard(404)
        return sum(n for code, n in st.items() if code in refused) / total if total else 0.0


def _order(label: str) -> tuple[int, str]:
    """Destructive operations last (deleting a workspace last of all), so the others see the seeded rows."""
    method, path = label.split(" ", 1)
    if path == "/workspaces/{id}/tokens/{token_id}":
        return (0, label)  # before POST …/tokens fills the workspace's token slots (the oldest is evicted)
    if method == "DELETE" and path == "/workspaces/{id}":
        return (3, label)
    if method == "DELETE" or path.endswith(("/pause", "/hibernate", "/restart")):
        return (2, label)
    return (1, label)


def run_schemathesis(
    doc: dict[str, Any],
    base: str,
    headers: dict[str, str],
    stats: Stats,
    tag: str,
    *,
    negative: bool = False,
    examples: int = EXAMPLES,
) -> None:
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: _order(f"{op.method.upper()} {op.path}"))
    mode = GenerationMode.NEGATIVE if negative else GenerationMode.POSITIVE
    for op in operations:
        deliberate = {int(c) for c in op.definition.raw.get("responses", {}) if c.isdigit() and c[0] == "5"}
        deliberate.discard(500)
        checks = [not_a_server_error, response_schema_conformance, status_code_conformance]
        run = Run(base, headers, stats, tag, checks, deliberate)
        run.fuzz(op, mode, examples)


@dataclass
class Run:
    """One operation's cases for one identity: every answer counted, every failed check collected (no
    shrinking: the first reproduction is reported as generated)."""

    base: str
    headers: dict[str, str]
    stats: Stats
    tag: str
    checks: list[Any]
    deliberate: set[int]

    def fuzz(self, op: Any, mode: Any, examples: int) -> None:
        import hypothesis
        from hypothesis import HealthCheck, Phase

        label = f"{op.method.upper()} {op.path}"

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @hypothesis.seed(SEED)
        @hypothesis.given(case=op.as_strategy(generation_mode=mode))
        def one(case: Any) -> None:
            self.check(label, case)

        try:
            one()
        except hypothesis.errors.Unsatisfiable:
            pass  # negative mode: nothing in this operation can be made invalid (no parameter, no body)

    def check(self, label: str, case: Any) -> None:
        stats = self.stats
        stats.cases[label] += 1
        try:
            response = case.call(base_url=self.base, headers=self.headers, timeout=20)
        except Exception as exc:
            stats.failures.append(f"[{self.tag}] {label}: request failed: {exc!r}")
            return
        stats.statuses.setdefault(label, Counter())[response.status_code] += 1
        if response.status_code in REFUSED:
            why = f"{response.status_code} {response.text[:80]}"
            stats.refusals.setdefault(label, Counter())[why] += 1
        try:
            case.validate_response(response, checks=self.checks, headers=self.headers)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup: a BaseExceptionGroup
            if response.status_code in self.deliberate and _only_server_error(exc):
                return  # a documented, deliberate 5xx (a feature this deployment lacks)
            stats.failures.append(
                f"[{self.tag}] {label}: {response.status_code} {response.text[:300]!r}\n"
                f"    {_failure_text(exc)}\n    reproduce: {case.as_curl_command(headers=self.headers)}"
            )


def _only_server_error(exc: BaseException) -> bool:
    from schemathesis.core.failures import ServerError

    inner = getattr(exc, "exceptions", [exc])
    return all(isinstance(e, ServerError) for e in inner)


def _failure_text(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", [exc])
    return " | ".join(f"{type(e).__name__}: {str(e)[:400]}" for e in inner)


def summary(stats: Stats, elapsed: float, db: str) -> str:
    labels = sorted(stats.cases)
    lines = [
        f"schemathesis on {db}: {len(labels)} operations, {sum(stats.cases.values())} cases, "
        f"{elapsed:.0f} s, seed {SEED}, {EXAMPLES} examples per operation and identity",
        "refused ratio (400/401/403/404/413/422 over all answers) per operation, worst first:",
    ]
    for label in sorted(labels, key=lambda lb: (-stats.refused_ratio(lb), lb)):
        codes = " ".join(f"{c}×{n}" for c, n in sorted(stats.statuses.get(label, Counter()).items()))
        lines.append(f"  {stats.refused_ratio(label):5.2f}  {label:60s} {codes}")
        if stats.refused_ratio(label) >= 0.75:
            for why, n in stats.refusals.get(label, Counter()).most_common(2):
                lines.append(f"           {n}× {why}")
    return "\n".join(lines)


@pytest.fixture
def fuzz_server(live_server_factory: Callable[..., LiveServer], tmp_path: Path) -> Iterator[LiveServer]:
    """Production mode (ADMIN_TOKEN), the process backend (so the files API has somewhere to write; no
    agent is ever started for the external workspaces seeded), one local plugin."""
    plugins = tmp_path / "plugins"
    (plugins / PLUGIN).mkdir(parents=True)
    (plugins / PLUGIN / "plugin.yaml").write_text(f"name: {PLUGIN}\nversion: 0.1.0\n", encoding="utf-8")
    (plugins / PLUGIN / "rules.md").write_text("Be kind.\n", encoding="utf-8")
    try:
        yield live_server_factory(
            ADMIN_TOKEN=ADMIN,
            RATE_LIMIT="1000000",
            MAX_BODY_BYTES=256 * 1024,
            WORKSPACE_BACKEND="process",
            PLUGINS_DIR=str(plugins),
            SLACK_WEBHOOK_BASE_URL="http://127.0.0.1:9/",  # loopback: refused by production egress, at once
        )
    finally:
        stop_agents(tmp_path)


def stop_agents(root: Path) -> None:
    """Agent processes the backend started for workspaces the fuzzer created (a bundle import can): by
    the pid each recorded, only when it still runs under this test's directory."""
    import json
    import signal

    import psutil

    for pidfile in root.rglob("agent.pid"):
        try:
            pid = int(json.loads(pidfile.read_text(encoding="utf-8"))["pid"])
            if str(root) not in psutil.Process(pid).cwd():
                continue
            os.killpg(pid, signal.SIGKILL)  # its own session: the agent and its children
        except (OSError, ValueError, KeyError, psutil.Error):
            continue


@pytest.mark.integration
def test_schemathesis_finds_no_server_error(fuzz_server: LiveServer, db_url: str) -> None:
    base = fuzz_server.url
    published = httpx.get(f"{base}/openapi.json", timeout=30).json()
    s = seed(base)
    assert s.ws_a and s.ws_b and s.token_a, "seeding failed"
    stats = Stats()
    started = time.monotonic()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    workspace = {"Authorization": f"Bearer {s.token_a}", "X-Workspace-ID": s.ws_a}
    run_schemathesis(fuzz_schema(published, s, only_workspace=True), base, workspace, stats, "workspace")
    run_schemathesis(fuzz_schema(published, s, only_workspace=False), base, admin, stats, "admin")
    # then data that violates the schema, as the admin (whom no auth check stops): 4xx, never a 5xx
    invalid = Stats()
    doc = fuzz_schema(published, s, only_workspace=False)
    run_schemathesis(doc, base, admin, invalid, "negative", negative=True, examples=NEGATIVE_EXAMPLES)
    elapsed = time.monotonic() - started
    db = "postgres" if db_url.startswith("postgres") else "sqlite"
    print("\n" + summary(stats, elapsed, db))
    print(f"negative: {len(invalid.cases)} operations, {sum(invalid.cases.values())} cases")
    failures = stats.failures + invalid.failures
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    nearly_all = [
        lb for lb in stats.cases if stats.refused_ratio(lb) >= NEARLY_ALL and lb not in EXPECTED_REFUSALS
    ]
    # "at most a handful": the documented ones above, and no more than two others (noise at this budget)
    assert len(nearly_all) <= 2, f"{len(nearly_all)} operations refuse nearly every case: {nearly_all}"
