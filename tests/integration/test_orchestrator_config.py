"""Pure rules of the orchestrator: generated config, required_env, restart template choice, restart
context text, git identity and the agents' platform URL. No services needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from workspace_server.config import Settings
from workspace_server.provisioner import config_source as cfg
from workspace_server.provisioner.orchestrator import git_identity
from workspace_server.provisioner.restart_context import (
    RestartSnapshot,
    build_message,
    build_payload,
    human_duration,
)
from workspace_server.provisioner.runtimes import RuntimeImages

IMAGES = RuntimeImages()


def test_default_config_quotes_user_text_and_keeps_known_runtimes() -> None:
    raw = cfg.default_config_yaml('Evil"\nname: x', "role: admin\r\n|>", 2, "echo", "", IMAGES)
    data = yaml.safe_load(raw)
    assert data == {
        "name": 'Evil" name: x',
        "description": "role: admin |>",
        "version": "1.0.0",
        "tier": 2,
        "runtime": "echo",
        "model": "anthropic:claude-opus-4-7",
        "runtime_config": {"timeout": 0},
    }
    assert "required_env" not in raw.decode()
    assert yaml.safe_load(cfg.default_config_yaml("a", "", 3, "claude-code", "", IMAGES))["model"] == "sonnet"
    lg = yaml.safe_load(cfg.default_config_yaml("a", "", 3, "../../etc", "m:1", IMAGES))
    assert (lg["runtime"], lg["model"], "runtime_config" in lg) == ("langgraph", "m:1", False)


def test_required_env_rules() -> None:
    conf = json.dumps({"runtime_config": {"required_env": ["A", "B", 3, ""]}}).encode()
    assert cfg.required_env(conf) == ["A", "B"]
    assert cfg.missing_env(conf, {"A": "", "B": "x"}) == ["A"]
    assert cfg.missing_env(b"runtime_config: [unclosed", {}) == []  # malformed YAML: nothing missing
    assert cfg.missing_env(None, {}) == []
    assert cfg.missing_env_message(["X"]) == (
        'missing required env var "X" — add it under Config → Env Vars (or as a Global secret) and retry'
    )
    assert cfg.missing_env_message(["A", "B"]).startswith("missing required env vars A, B — add them")


def test_declared_runtime_ignores_implausible_values() -> None:
    assert cfg.declared_runtime(b"runtime: hermes\n") == "hermes"
    assert cfg.declared_runtime(b"runtime: ../x\n") == ""
    assert cfg.declared_runtime(b"runtime: [1]\n") == ""


def _settings(tmp_path: Path) -> Settings:
    return Settings(CONFIGS_DIR=str(tmp_path))


def _template(root: Path, name: str, config: dict[str, Any]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "config.yaml").write_text(json.dumps(config))


def test_restart_template_rules(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    _template(tmp_path, "explicit", {"name": "x"})
    _template(tmp_path, "seo-agent", {"name": "whatever"})
    _template(tmp_path, "by-config-name", {"name": "Research Lead"})
    _template(tmp_path, "ws-research-lead", {"name": "Research Lead"})
    _template(tmp_path, "langgraph-default", {"name": "d"})
    _template(tmp_path / "org-templates", "research-lead", {"name": "Research Lead"})

    def pick(name: str, runtime: str, **body: Any) -> str:
        return cfg.resolve_restart_template(s, name, runtime, cfg.RestartBody(**body), IMAGES)[1]

    assert pick("SEO Agent", "echo") == "existing-volume"  # a plain restart never re-applies
    assert pick("SEO Agent", "echo", template="explicit", apply_template=True) == "explicit"
    assert pick("SEO Agent", "echo", template="../outside", apply_template=True) == "seo-agent"
    assert pick("SEO Agent", "echo", apply_template=True) == "seo-agent"
    assert pick("research lead", "echo", apply_template=True) == "by-config-name"
    assert pick("Research Lead", "echo", rebuild_config=True) == "org-templates/research-lead"
    assert pick("Nobody", "../../evil", apply_template=True) == "langgraph-default"
    assert pick("Nobody", "echo", apply_template=True) == "existing-volume"  # no echo-default here


def test_parse_restart_body() -> None:
    assert cfg.parse_restart_body(None) == cfg.RestartBody()
    assert cfg.parse_restart_body({"reset": True, "template": "t"}) == cfg.RestartBody(
        "t", False, True, False
    )
    assert cfg.parse_restart_body({"reset": "true"}) is None
    assert cfg.parse_restart_body([1]) is None
    assert cfg.normalize_name("Agent v2.0") == "agent-v20"
    assert cfg.normalize_name("../hack") == "hack"


def test_restart_context_text() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    snap = RestartSnapshot(at, at - timedelta(hours=2, minutes=14, seconds=9), ["A", "B"])
    assert build_message(snap) == (
        "=== WORKSPACE RESTART CONTEXT ===\n"
        "Restart at: 2026-01-02T03:04:05Z\n"
        "Previous session ended: 2026-01-02T00:49:56Z (2h14m ago)\n"
        "Env vars now available: A, B\n"
        "=== END RESTART CONTEXT ===\n"
    )
    fresh = build_message(RestartSnapshot(at, None, []))
    assert "Previous session ended: (no prior session on record)\n" in fresh
    assert "Env vars now available: (none)\n" in fresh
    assert [human_duration(timedelta(seconds=s)) for s in (-5, 0, 38, 61, 3600)] == [
        "0s",
        "0s",
        "38s",
        "1m1s",
        "1h0m",
    ]
    msg = build_payload("hi")["params"]["message"]
    assert msg["metadata"] == {
        "source": "platform",
        "kind": "restart_context",
        "layer": 1,
        "restart_context": True,
    }
    assert msg["parts"] == [{"kind": "text", "text": "hi"}] and msg["role"] == "user"


def test_git_identity_fills_only_missing_keys() -> None:
    env = {"GIT_AUTHOR_NAME": "Custom"}
    git_identity(env, "  Frontend Engineer ")
    assert env == {
        "GIT_AUTHOR_NAME": "Custom",
        "GIT_AUTHOR_EMAIL": "frontend-engineer@agents.moleculesai.app",
        "GIT_COMMITTER_NAME": "Molecule AI Frontend Engineer",
        "GIT_COMMITTER_EMAIL": "frontend-engineer@agents.moleculesai.app",
    }
    empty: dict[str, str] = {}
    git_identity(empty, "   ")
    assert empty == {}


def test_platform_url_per_backend() -> None:
    from types import SimpleNamespace

    from workspace_server.provisioner.docker import DockerBackend
    from workspace_server.provisioner.orchestrator import Orchestrator
    from workspace_server.provisioner.process import ProcessBackend
    from workspace_server.provisioner.swarm import SwarmBackend

    def url(backend: str | None, **settings: Any) -> str:
        ctx: Any = SimpleNamespace(settings=Settings(PORT=8123, **settings), engine=None)
        # the real backend of that name: its own answer (Backend.shares_host_network) decides
        real = {
            "docker": DockerBackend(ctx.settings, client=SimpleNamespace()),
            "process": ProcessBackend(ctx.settings),
            "swarm": SwarmBackend(ctx.settings, client=SimpleNamespace()),
        }
        return Orchestrator(ctx, real[backend] if backend else None).platform_url(tier=2)

    assert url("process") == "http://127.0.0.1:8123"
    assert url("process", HOST="0.0.0.0") == "http://127.0.0.1:8123"
    assert url("process", HOST="::1") == "http://[::1]:8123"
    assert url("docker", DOCKER_NETWORK_MODE="host") == "http://127.0.0.1:8123"
    assert url("docker", DOCKER_NETWORK_MODE="bridge") == "http://host.docker.internal:8123"
    # auto: host networking while the server listens on loopback (a bridge container could not reach it)
    assert url("docker") == "http://127.0.0.1:8123"
    assert url("docker", HOST="0.0.0.0") == "http://host.docker.internal:8123"
    assert url("docker", PLATFORM_URL="https://ws.example.com/") == "https://ws.example.com"
    # Swarm: the host network as on Docker; the overlay network reaches the node through host-gateway
    assert url("swarm", DOCKER_NETWORK_MODE="host") == "http://127.0.0.1:8123"
    assert url("swarm", DOCKER_NETWORK_MODE="bridge") == "http://host.docker.internal:8123"
    assert url("swarm", HOST="0.0.0.0") == "http://host.docker.internal:8123"
