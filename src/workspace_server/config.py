"""The one place that reads the environment.

Env names are the reference server's (spec 06 §2.2) so a deployment's env file works unchanged.
Everything else receives a `Settings` instance; no other module reads `os.environ`. The two places that
need raw process variables rather than settings (`${VAR}` in an org template, the environment of a `git`
child) ask `process_environ` / `passthrough_environ` below, which read it at call time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://localhost:3001")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)

    # storage and bus
    DATABASE_URL: str = "sqlite:///./data/workspace-server.db"
    REDIS_URL: str = ""  # empty: in-process bus and caches
    DATA_DIR: Path = Path("./data")

    # listening
    HOST: str = "127.0.0.1"
    PORT: int = 8080
    PLATFORM_URL: str = ""
    EXTERNAL_PLATFORM_URL: str = ""

    # modes and credentials
    MOLECULE_ENV: str = ""
    ADMIN_TOKEN: str = ""
    SECRETS_ENCRYPTION_KEY: str = ""
    # retired keys (comma-separated, same format), still tried for decryption; rows under them are
    # re-encrypted under the current key at start (docs/operations.md "Rotating the secrets key")
    SECRETS_ENCRYPTION_KEY_PREVIOUS: str = ""
    # where the generated key lives when SECRETS_ENCRYPTION_KEY is unset outside production; empty: beside
    # the SQLite database file, else `<DATA_DIR>/secrets.key` (`secrets_key_file`)
    SECRETS_KEY_FILE: str = ""
    MOLECULE_ORG_ID: str = ""
    MOLECULE_ORG_SLUG: str = ""
    MOLECULE_DEPLOY_MODE: str = ""
    MOLECULE_ENABLE_TEST_TOKENS: str = ""
    MOLECULE_GH_IDENTITY_CONFIG_FILE: str = ""  # optional YAML for the gh-identity env mutator
    CP_UPSTREAM_URL: str = ""
    CANVAS_PROXY_URL: str = ""
    CORS_ORIGINS: str = ""
    RATE_LIMIT: str = "600"

    # workspaces
    WORKSPACE_BACKEND: Literal["auto", "docker", "swarm", "process", "none"] = "auto"
    CONFIGS_DIR: str = ""
    WORKSPACE_DIR: str = ""

    # provisioner backends (provisioner/): runtime images, docker networking, tier limits
    RUNTIME_IMAGES: str = ""  # JSON object runtime -> image ref, over the built-in map
    DOCKER_HOST: str = ""  # empty: the local engine socket
    # auto: host networking while the server listens on loopback only (a bridge container could not reach
    # it), bridge otherwise
    DOCKER_NETWORK_MODE: Literal["auto", "bridge", "host"] = "auto"
    DOCKER_NETWORK: str = "molecule-monorepo-net"
    # swarm backend: the attachable overlay network of the agents, and per-tier placement constraints
    # (`3=node.labels.trusted==true;4=node.role==manager`, see provisioner/swarm/spec.py)
    SWARM_NETWORK: str = "molecule-swarm-net"
    SWARM_TIER_CONSTRAINTS: str = ""
    # swarm backend, several nodes: `<molecule.volume-host label value>=<docker host URL>;…`, the engine of
    # each node that may hold workspaces besides the manager this server talks to (`swarm_node_engines`)
    SWARM_NODE_ENGINES: str = ""
    MOLECULE_IN_DOCKER: bool | None = None  # unset: detected from /.dockerenv (see `in_docker`)
    MOLECULE_IMAGE_PLATFORM: str | None = None  # set (even empty) wins over the host default
    ALLOW_PRIVILEGED_TIERS: bool = False  # T3/T4 privileged, pid=host, host net, docker.sock
    # warm pool (provisioner/docker/pool.py): started, unassigned agent containers per (image, tier) that a
    # create claims instead of creating one. Size per key; 0 = off (the default for every mode: members
    # hold memory and need python3 in the image, so an operator opts in)
    WARM_POOL_SIZE: int = 0
    WARM_POOL_IMAGES: str = "molecule/workspace-agent:latest"  # comma separated image refs
    WARM_POOL_TIERS: str = "2"  # comma separated tiers
    WARM_POOL_INTERVAL: float = 1.0  # seconds between refill passes
    # modules a member imports while it waits (the reference agent imports yaml lazily, in config.load)
    WARM_POOL_PRELOAD: str = "yaml"
    TIER1_MEMORY_MB: str = ""
    TIER1_CPU_SHARES: str = ""
    TIER2_MEMORY_MB: str = ""
    TIER2_CPU_SHARES: str = ""
    TIER3_MEMORY_MB: str = ""
    TIER3_CPU_SHARES: str = ""
    TIER4_MEMORY_MB: str = ""
    TIER4_CPU_SHARES: str = ""

    # sweepers and timeouts (seconds unless named otherwise)
    PROVISION_TIMEOUT_SECONDS: str = ""
    REMOTE_LIVENESS_STALE_AFTER: str = "90"
    LIVENESS_TTL_SECONDS: int = 180
    LIVENESS_SWEEP_INTERVAL: float = 10.0
    PROVISION_SWEEP_INTERVAL: float = 30.0
    HEALTH_SWEEP_INTERVAL: float = 15.0  # orchestrator: dead instances of live rows → offline → restart
    ORPHAN_SWEEP_INTERVAL: float = 60.0  # orchestrator: instances without a live row; <= 0 disables
    HIBERNATION_SWEEP_INTERVAL: float = 120.0  # idle hibernation (hibernation_idle_minutes); <= 0 disables
    SCHEDULER_INTERVAL: float = 30.0  # cron schedules: how often due ones are fired; <= 0 disables
    GITHUB_WEBHOOK_SECRET: str = ""  # HMAC key of POST /webhooks/github; empty: the route answers 503
    GHCR_USER: str = ""  # registry auth for POST /admin/workspace-images/refresh pulls from ghcr.io
    GHCR_TOKEN: str = ""
    LEADER_LEASE_TTL_SECONDS: float = 15.0  # background-loop leader lease (DESIGN §6)
    LEADER_LEASE_RENEW_SECONDS: float = 5.0
    ACTIVITY_RETENTION_DAYS: str = "7"
    ACTIVITY_CLEANUP_INTERVAL_HOURS: str = "6"
    A2A_IDLE_TIMEOUT_SECONDS: int = 300
    # how long a proxied call's activity row may wait for companions before the batch is written (rows
    # are journaled under DATA_DIR/activity-journal first, so a longer wait risks nothing on a crash)
    ACTIVITY_FLUSH_SECONDS: float = Field(default=0.02, ge=0.0, le=60.0)
    # egress (egress/): private CIDRs the server may dial besides public addresses (agents on a private
    # network); comma separated, `CIDR` or `CIDR:port`, e.g. "10.20.0.0/16,fd12:3456::/48,127.0.0.1/32:3000"
    EGRESS_ALLOW_CIDRS: str = ""

    # MCP bridge and traces (mcp/, activity/traces.py)
    MOLECULE_MCP_ALLOW_SEND_MESSAGE: str = ""  # exactly "true" enables send_message_to_user
    MCP_RATE_LIMIT: int = Field(default=120, gt=0)  # calls per minute per bearer token
    LANGFUSE_HOST: str = ""
    LANGFUSE_PUBLIC_KEY: str = ""
    LANGFUSE_SECRET_KEY: str = ""

    # audit ledger (audit/): the password the agents' ledger derives its HMAC key from; empty means
    # `GET /workspaces/:id/audit` reports `chain_valid: null` instead of verifying the chain
    AUDIT_LEDGER_SALT: str = ""

    # request log: "on" = every request but the agents' successful heartbeats and A2A calls (those are in
    # /metrics, and every A2A call in the activity log); "all" = every request, as the reference; "off"
    ACCESS_LOG: Literal["on", "all", "off"] = "on"

    # request limits (issue 11 §3; serving.py and cli.server_config apply the HTTP ones, common/http.py
    # the body ones). Over a head cap: 431/414 and the connection closed; a head not complete within
    # HEADER_TIMEOUT_SECONDS: 408 and closed.
    MAX_BODY_BYTES: int = Field(default=10 * 1024 * 1024)
    MAX_HEADER_BYTES: int = Field(default=64 * 1024, gt=0)  # request line and headers together
    MAX_HEADER_COUNT: int = Field(default=100, gt=0)
    MAX_URL_BYTES: int = Field(default=8 * 1024, gt=0)
    HEADER_TIMEOUT_SECONDS: float = 10.0  # <= 0 disables
    BODY_IDLE_TIMEOUT_SECONDS: float = 30.0  # a request body sending nothing this long: closed; <= 0 disables
    KEEP_ALIVE_TIMEOUT_SECONDS: int = Field(
        default=5, gt=0
    )  # idle keep-alive connections are closed after this
    WS_MAX_MESSAGE_BYTES: int = Field(default=1024 * 1024, gt=0)  # larger WebSocket messages close it (1009)
    MAX_CONNECTIONS: int = 4096  # open connections + in-flight requests; over it: 503. <= 0: no cap

    # plugins (plugins/): the registry dir, install caps (spec 06 §2.2: unset, unparsable or <= 0 means the
    # default), and the github source
    PLUGINS_DIR: str = ""  # empty: discovered next to the configs dir (spec 06 §2.3)
    PLUGIN_INSTALL_BODY_MAX_BYTES: str = ""  # default 65536
    PLUGIN_INSTALL_FETCH_TIMEOUT: str = ""  # a Go duration ("90s", "5m"); default 5m
    PLUGIN_INSTALL_MAX_DIR_BYTES: str = ""  # default 104857600 (100 MiB) staged per plugin
    PLUGIN_ALLOW_UNPINNED: str = ""  # exactly "true" allows github:// sources without a #ref
    PLUGIN_GITHUB_BASE_URL: str = "https://github.com"  # where github:// clones from (tests: a file:// dir)
    # social channels (channels/): where each provider's API is dialed (tests point them at local fakes;
    # every dial goes through the egress policy). The Slack/Telegram values are the SDKs' own base URLs.
    SLACK_API_BASE_URL: str = "https://slack.com/api/"
    SLACK_WEBHOOK_BASE_URL: str = "https://hooks.slack.com/"  # incoming webhooks, re-rooted here
    TELEGRAM_API_BASE_URL: str = "https://api.telegram.org/bot"
    DISCORD_API_BASE_URL: str = "https://discord.com/api"  # webhooks and interaction follow-ups
    LARK_FEISHU_BASE_URL: str = "https://open.feishu.cn"  # bot webhooks of open.feishu.cn
    LARK_LARKSUITE_BASE_URL: str = "https://open.larksuite.com"  # bot webhooks of open.larksuite.com
    DISCORD_APP_PUBLIC_KEY: str = ""  # hex Ed25519 key for POST /webhooks/discord when no row names one
    SLACK_SIGNING_SECRET: str = ""  # Slack Events API signing secret when a slack row names none
    CHANNEL_WEBHOOK_MAX_BYTES: int = 1 << 20  # inbound provider webhook bodies (spec: Discord ≤ 1 MiB)
    CHANNEL_POLL_TIMEOUT_SECONDS: int = 30  # Telegram getUpdates long-poll timeout

    @field_validator("EGRESS_ALLOW_CIDRS")
    @classmethod
    def _egress_cidrs(cls, v: str) -> str:
        from workspace_server.egress.policy import parse_cidrs

        parse_cidrs(v)  # ValueError: refuse to start on a typo
        return v

    @field_validator("SWARM_NODE_ENGINES")
    @classmethod
    def _swarm_node_engines(cls, v: str) -> str:
        parse_node_engines(v)  # ValueError: refuse to start on a typo, not at a workspace's start
        return v

    @field_validator("PORT", mode="before")
    @classmethod
    def _port(cls, v: object) -> object:
        return v or 8080

    # ---- derived facts (one place decides each) ----

    @property
    def env_name(self) -> str:
        return self.MOLECULE_ENV.strip().lower()

    @property
    def is_production(self) -> bool:
        return self.env_name in ("prod", "production")

    @property
    def open_bootstrap(self) -> bool:
        """Neither ADMIN_TOKEN nor production: the reference's open bootstrap, where a workspace with no
        live token is an unauthenticated identity and its first register mints its token (issue 11 §1).
        Otherwise ("production mode") every workspace call needs a credential."""
        return not self.ADMIN_TOKEN and not self.is_production

    @property
    def dev_mode_fail_open(self) -> bool:
        """Spec 03 §3: dev mode iff ADMIN_TOKEN is empty and MOLECULE_ENV is dev/development."""
        return not self.ADMIN_TOKEN and self.env_name in ("dev", "development")

    @property
    def saas_mode(self) -> bool:
        mode = self.MOLECULE_DEPLOY_MODE.strip().lower()
        if mode:
            return mode == "saas"
        return bool(self.MOLECULE_ORG_ID.strip())

    @property
    def secrets_key_file(self) -> Path:
        """The generated secrets key's file: SECRETS_KEY_FILE, else `secrets.key` beside the SQLite database
        file, else (Postgres, in-memory SQLite) `<DATA_DIR>/secrets.key`."""
        if self.SECRETS_KEY_FILE:
            return Path(self.SECRETS_KEY_FILE)
        url = self.DATABASE_URL.strip()
        if url.startswith("sqlite") and "///" in url:
            db_path = url.split("///", 1)[1].split("?", 1)[0]
            if db_path and db_path != ":memory:":
                return Path(db_path).parent / "secrets.key"
        return self.DATA_DIR / "secrets.key"

    @property
    def test_tokens_enabled(self) -> bool:
        # DECIDE (spec 06 §6): "prod" and "production" both count as production here, as in crypto.
        return self.MOLECULE_ENABLE_TEST_TOKENS == "1" or not self.is_production

    @property
    def cors_origins(self) -> list[str]:
        raw = [o.strip().lower() for o in self.CORS_ORIGINS.split(",") if o.strip()]
        return raw or list(DEFAULT_CORS_ORIGINS)

    @property
    def rate_limit(self) -> int:
        try:
            n = int(self.RATE_LIMIT)
        except ValueError:
            return 600
        return n if n > 0 else 600

    @property
    def provision_timeout_override(self) -> int | None:
        try:
            n = int(self.PROVISION_TIMEOUT_SECONDS)
        except ValueError:
            return None
        return n if n > 0 else None

    @property
    def remote_liveness_stale_after(self) -> int:
        try:
            n = int(self.REMOTE_LIVENESS_STALE_AFTER)
        except ValueError:
            return 90
        return n if n > 0 else 90

    @property
    def activity_retention_days(self) -> int:
        try:
            n = int(self.ACTIVITY_RETENTION_DAYS)
        except ValueError:
            return 7
        return n if n > 0 else 7

    @property
    def activity_cleanup_interval_seconds(self) -> float:
        try:
            n = float(self.ACTIVITY_CLEANUP_INTERVAL_HOURS)
        except ValueError:
            return 6 * 3600.0
        return n * 3600.0 if n > 0 else 6 * 3600.0

    @property
    def docker_host_network(self) -> bool:
        if self.DOCKER_NETWORK_MODE != "auto":
            return self.DOCKER_NETWORK_MODE == "host"
        return self.HOST in ("127.0.0.1", "localhost", "::1")

    @property
    def swarm_node_engines(self) -> dict[str, str]:
        """SWARM_NODE_ENGINES parsed: node label value -> that node's engine address."""
        return parse_node_engines(self.SWARM_NODE_ENGINES)

    @property
    def in_docker(self) -> bool:
        """Whether this server itself runs in a Docker container (spec 06 §2.2 MOLECULE_IN_DOCKER)."""
        if self.MOLECULE_IN_DOCKER is not None:
            return self.MOLECULE_IN_DOCKER
        return Path("/.dockerenv").exists()

    @property
    def platform_url(self) -> str:
        return self.PLATFORM_URL or f"http://host.docker.internal:{self.PORT}"

    @property
    def plugin_body_max_bytes(self) -> int:
        return _positive_int(self.PLUGIN_INSTALL_BODY_MAX_BYTES, 65536)

    @property
    def plugin_max_dir_bytes(self) -> int:
        return _positive_int(self.PLUGIN_INSTALL_MAX_DIR_BYTES, 100 * 1024 * 1024)

    @property
    def plugin_fetch_timeout_seconds(self) -> float:
        seconds = parse_go_duration(self.PLUGIN_INSTALL_FETCH_TIMEOUT)
        return seconds if seconds is not None and seconds > 0 else 300.0

    @property
    def plugin_allow_unpinned(self) -> bool:
        return self.PLUGIN_ALLOW_UNPINNED == "true"

    @property
    def plugins_dir(self) -> Path:
        """PLUGINS_DIR, else the first of `<configs>/../plugins`, `../plugins`, `plugins` holding a
        subdirectory, else `<configs>/../plugins` (spec 06 §2.3)."""
        if self.PLUGINS_DIR:
            return Path(self.PLUGINS_DIR).resolve()
        default = (self.configs_dir.parent / "plugins").resolve()
        for cand in (default, Path("../plugins"), Path("plugins")):
            if cand.is_dir() and any(d.is_dir() for d in cand.iterdir()):
                return cand.resolve()
        return default

    @property
    def configs_dir(self) -> Path:
        if self.CONFIGS_DIR:
            return Path(self.CONFIGS_DIR).resolve()
        for cand in ("workspace-configs-templates", "../workspace-configs-templates"):
            p = Path(cand)
            if p.is_dir() and any((d / "config.yaml").is_file() for d in p.iterdir() if d.is_dir()):
                return p.resolve()
        return Path("workspace-configs-templates").resolve()


def process_environ() -> dict[str, str]:
    """A copy of the server's environment, read now: the last source of `${VAR}` in an org template's
    `workspace_dir` (spec 06 §3.5), after the org and node `.env` files."""
    return dict(os.environ)


def passthrough_environ(names: Iterable[str]) -> dict[str, str]:
    """The non-empty values of `names` in the server's environment, read now: what a child process (the
    plugin `git` clone) inherits, instead of the whole environment with its ADMIN_TOKEN, DATABASE_URL…"""
    return {k: v for k in names if (v := os.environ.get(k))}


_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(raw: str) -> float | None:
    """Seconds of a Go `time.ParseDuration` string (`1m30s`, `250ms`, `-5s`), None when it does not parse."""
    text = raw.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-")
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total if text and pos == len(text) else None


def _positive_int(raw: str, default: int) -> int:
    try:
        n = int(raw.strip())
    except ValueError:
        return default
    return n if n > 0 else default


_NODE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # goes into a constraint `node.labels.…==<value>`
_ENGINE_SCHEMES = ("unix://", "tcp://", "ssh://", "http://", "https://")  # what the docker SDK dials


def parse_node_engines(raw: str) -> dict[str, str]:
    """`SWARM_NODE_ENGINES`: `w1=ssh://ops@node1;w2=unix:///run/w2/docker.sock` (node label value ->
    engine address). ValueError on a malformed entry, an unknown scheme or a value named twice."""
    out: dict[str, str] = {}
    for part in raw.split(";"):
        part = part.strip()
        if not part:
            continue
        value, sep, url = (s.strip() for s in part.partition("="))
        if not sep or not _NODE_VALUE.fullmatch(value):
            raise ValueError(f"SWARM_NODE_ENGINES: {part!r} is not <node label value>=<docker host URL>")
        if not url.startswith(_ENGINE_SCHEMES) or len(url) <= url.index("://") + 3:
            schemes = ", ".join(_ENGINE_SCHEMES)
            raise ValueError(f"SWARM_NODE_ENGINES: {url!r} is not a docker host URL ({schemes})")
        if value in out:
            raise ValueError(f"SWARM_NODE_ENGINES: {value!r} is named twice")
        out[value] = url
    return out
