"""Agent configuration: env injected by the platform (spec 07 §4) plus /configs/config.yaml."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECRETS_DIR = Path("/run/secrets")


def env_from_secret_files(env: MutableMapping[str, str] | None = None, root: Path = SECRETS_DIR) -> list[str]:
    """`<NAME>_FILE=/run/secrets/...` sets `<NAME>` from that file, unless `<NAME>` is set already.

    The Swarm backend hands secrets over this way (a Swarm secret mounted in the task, never a value in
    the service spec); a plain `<NAME>` env var, as the Docker backend passes, is untouched. Only files
    under `root` count, so a `_FILE` variable meant for something else is left alone. Returns the names
    set (never the values)."""
    env = os.environ if env is None else env
    base = root.resolve()
    done: list[str] = []
    for key, target in list(env.items()):
        name = key[: -len("_FILE")]
        if not key.endswith("_FILE") or not name or env.get(name):
            continue
        try:
            path = Path(target).resolve()
            if not path.is_relative_to(base) or not path.is_file():
                continue
            value = path.read_bytes().decode("utf-8", "surrogateescape")
        except (OSError, ValueError):
            continue
        env[name] = value
        done.append(name)
    return done


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        import yaml
    except ImportError:  # pragma: no cover - the image installs python3-yaml
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class AgentConfig:
    workspace_id: str
    platform_url: str
    config_dir: Path
    port: int
    advertised_url: str
    heartbeat_interval: float
    name: str
    description: str
    version: str
    skills: list[dict[str, Any]] = field(default_factory=list)
    # OpenAI-compatible chat endpoint; empty base_url = echo
    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_model: str = ""
    reply_delay: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def token_path(self) -> Path:
        return self.config_dir / ".auth_token"

    def read_token(self) -> str:
        env = os.environ.get("MOLECULE_WORKSPACE_TOKEN", "").strip()
        if env:
            return env
        try:
            return self.token_path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def save_token(self, token: str) -> None:
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token)
        except OSError:
            pass  # read-only config volume: keep the token in memory only


def _skills(raw: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in raw.get("skills") or []:
        if isinstance(s, str):
            out.append({"id": s, "name": s, "description": "", "tags": []})
        elif isinstance(s, dict) and s.get("id"):
            out.append(
                {
                    "id": str(s["id"]),
                    "name": str(s.get("name") or s["id"]),
                    "description": str(s.get("description") or ""),
                    "tags": list(s.get("tags") or []),
                }
            )
    return out or [
        {"id": "echo", "name": "Echo", "description": "Replies with the text it receives", "tags": []}
    ]


def load() -> AgentConfig:
    env = os.environ
    workspace_id = env.get("WORKSPACE_ID", "").strip()
    if not workspace_id:
        raise SystemExit("WORKSPACE_ID is required")
    config_dir = Path(env.get("WORKSPACE_CONFIG_PATH") or env.get("CONFIGS_DIR") or "/configs")
    raw = _load_yaml(config_dir / "config.yaml")
    a2a = raw.get("a2a") if isinstance(raw.get("a2a"), dict) else {}
    port = int(env.get("A2A_PORT") or env.get("PORT") or (a2a or {}).get("port") or 8000)
    host = env.get("HOSTNAME", "").strip()
    advertised = env.get("MOLECULE_AGENT_URL", "").strip() or f"http://{host or 'localhost'}:{port}"
    rc = raw.get("runtime_config") if isinstance(raw.get("runtime_config"), dict) else {}
    rc = rc or {}
    return AgentConfig(
        workspace_id=workspace_id,
        platform_url=(env.get("PLATFORM_URL") or env.get("MOLECULE_URL") or "http://localhost:8080").rstrip(
            "/"
        ),
        config_dir=config_dir,
        port=port,
        advertised_url=advertised,
        heartbeat_interval=float(env.get("HEARTBEAT_INTERVAL_SECONDS") or 30),
        name=str(raw.get("name") or "Workspace"),
        description=str(raw.get("description") or raw.get("role") or ""),
        version=str(raw.get("version") or "1.0.0"),
        skills=_skills(raw),
        llm_base_url=(env.get("OPENAI_BASE_URL") or str(rc.get("openai_base_url") or "")).rstrip("/"),
        llm_api_key=env.get("OPENAI_API_KEY", ""),
        llm_model=env.get("MODEL_PROVIDER") or str(rc.get("model") or raw.get("model") or ""),
        reply_delay=float(env.get("ECHO_DELAY_SECONDS") or 0),
        raw=raw,
    )
