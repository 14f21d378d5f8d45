"""All tables. One Alembic revision per schema change lives in migrations/versions.

Ids are UUID strings in String(36) columns: identical on SQLite and Postgres, and every route validates
the UUID form before it reaches SQL (upstream let non-UUID ids hit Postgres and answered 500; spec 01 §6).
"""

from __future__ import annotations

import sqlalchemy as sa

from workspace_server.db.types import JSONType, UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(36)

WORKSPACE_STATUSES = (
    "provisioning",
    "online",
    "offline",
    "degraded",
    "failed",
    "removed",
    "paused",
    "hibernating",
    "hibernated",
    "awaiting_agent",
)


def _now() -> sa.TextClause:
    return sa.text("CURRENT_TIMESTAMP")


def _ws_fk(ondelete: str = "CASCADE") -> sa.ForeignKey:
    return sa.ForeignKey("workspaces.id", ondelete=ondelete)


workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("role", sa.Text),
    sa.Column("tier", sa.Integer, nullable=False, server_default="1"),
    sa.Column("status", sa.String(32), nullable=False, server_default="provisioning"),
    sa.Column("source_bundle_id", sa.Text),
    sa.Column("agent_card", JSONType),
    sa.Column("url", sa.Text),
    sa.Column("parent_id", ID, _ws_fk("SET NULL")),
    sa.Column("forwarded_to", ID, _ws_fk("SET NULL")),
    sa.Column("last_heartbeat_at", UTCDateTime),
    sa.Column("last_error_rate", sa.Float, nullable=False, server_default="0"),
    sa.Column("last_sample_error", sa.Text),
    sa.Column("active_tasks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("uptime_seconds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("current_task", sa.Text),
    sa.Column("awareness_namespace", sa.Text),
    sa.Column("runtime", sa.Text, nullable=False, server_default="langgraph"),
    sa.Column("workspace_dir", sa.Text),
    sa.Column("workspace_access", sa.String(20), nullable=False, server_default="none"),
    sa.Column("budget_limit", sa.BigInteger),
    sa.Column("monthly_spend", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("hibernation_idle_minutes", sa.Integer),
    sa.Column("idle_since", UTCDateTime),
    sa.Column("last_outbound_at", UTCDateTime),
    sa.Column("max_concurrent_tasks", sa.Integer, nullable=False, server_default="1"),
    sa.Column("instance_id", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint(
        "status IN (" + ",".join(f"'{s}'" for s in WORKSPACE_STATUSES) + ")", name="status_valid"
    ),
    sa.CheckConstraint("workspace_access IN ('none','read_only','read_write')", name="access_valid"),
    sa.Index("ix_workspaces_parent_id", "parent_id"),
    sa.Index("ix_workspaces_status", "status"),
)

canvas_layouts = sa.Table(
    "canvas_layouts",
    metadata,
    sa.Column("workspace_id", ID, _ws_fk(), primary_key=True),
    sa.Column("x", sa.Float, nullable=False, server_default="0"),
    sa.Column("y", sa.Float, nullable=False, server_default="0"),
    sa.Column("collapsed", sa.Boolean, nullable=False, server_default=sa.false()),
)

canvas_viewport = sa.Table(
    "canvas_viewport",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("x", sa.Float, nullable=False, server_default="0"),
    sa.Column("y", sa.Float, nullable=False, server_default="0"),
    sa.Column("zoom", sa.Float, nullable=False, server_default="1"),
    sa.Column("saved_at", UTCDateTime, nullable=False, server_default=_now()),
)

workspace_config = sa.Table(
    "workspace_config",
    metadata,
    sa.Column("workspace_id", ID, _ws_fk(), primary_key=True),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
)

# Per-workspace secrets (spec 05 §1). encryption_version: 0 plaintext, 1 AES-256-GCM (secrets/crypto.py).
workspace_secrets = sa.Table(
    "workspace_secrets",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("encrypted_value", sa.LargeBinary, nullable=False),
    sa.Column("encryption_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.UniqueConstraint("workspace_id", "key"),
)

structure_events = sa.Table(
    "structure_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("workspace_id", ID),  # no FK: the trail outlives purged workspaces
    sa.Column("agent_id", ID),
    sa.Column("target_id", ID),
    sa.Column("payload", JSONType),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Index("ix_structure_events_workspace_id_created_at", "workspace_id", "created_at"),
    sa.Index("ix_structure_events_created_at", "created_at"),
)

activity_logs = sa.Table(
    "activity_logs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("activity_type", sa.Text, nullable=False),
    # source/target are free text: system callers (`system:…`) are not UUIDs (spec 04 §8.5)
    sa.Column("source_id", sa.Text),
    sa.Column("target_id", sa.Text),
    sa.Column("method", sa.Text),
    sa.Column("summary", sa.Text),
    sa.Column("request_body", JSONType),
    sa.Column("response_body", JSONType),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("status", sa.Text, nullable=False, server_default="ok"),
    sa.Column("error_detail", sa.Text),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("tool_trace", JSONType),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Index("ix_activity_logs_ws_type_created", "workspace_id", "activity_type", "created_at"),
    sa.Index("ix_activity_logs_created_at", "created_at"),
)

workspace_auth_tokens = sa.Table(
    "workspace_auth_tokens",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
    sa.Index("ix_workspace_auth_tokens_workspace_id", "workspace_id"),
)

org_api_tokens = sa.Table(
    "org_api_tokens",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("created_by", sa.Text),
    sa.Column("org_id", ID, _ws_fk("SET NULL")),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

# One row per background duty; whoever holds an unexpired lease runs it (DESIGN §6).
leader_leases = sa.Table(
    "leader_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

# ---- A2A (spec 04 §1.7, §2; spec 01 §1.2) ----

_ACTIVE_QUEUE_KEY = "idempotency_key IS NOT NULL AND status IN ('queued','dispatched')"
A2A_QUEUE_STATUSES = ("queued", "dispatched", "completed", "dropped", "failed")

# Messages for a busy target, drained on heartbeats with spare capacity (a2a/queue.py).
a2a_queue = sa.Table(
    "a2a_queue",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("caller_id", sa.Text),  # text: system callers are not UUIDs (spec 04 §8.5)
    sa.Column("priority", sa.SmallInteger, nullable=False, server_default="50"),
    sa.Column("body", JSONType, nullable=False),
    sa.Column("method", sa.Text),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("enqueued_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("dispatched_at", UTCDateTime),
    sa.Column("completed_at", UTCDateTime),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("last_error", sa.Text),
    sa.CheckConstraint(
        "status IN (" + ",".join(f"'{s}'" for s in A2A_QUEUE_STATUSES) + ")", name="status_valid"
    ),
    sa.Index("ix_a2a_queue_claim", "workspace_id", "status", "priority", "enqueued_at"),
    sa.Index(
        "uq_a2a_queue_active_key",
        "workspace_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text(_ACTIVE_QUEUE_KEY),
        sqlite_where=sa.text(_ACTIVE_QUEUE_KEY),
    ),
)

# Daily LLM token usage reported in A2A replies (spec 01 §3 metrics; written by the A2A proxy).
workspace_token_usage = sa.Table(
    "workspace_token_usage",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("period_start", UTCDateTime, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("call_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "estimated_cost_usd",
        sa.Numeric(12, 6, asdecimal=False).with_variant(sa.Float(), "sqlite"),
        nullable=False,
        server_default="0",
    ),
    sa.UniqueConstraint("workspace_id", "period_start"),
)

# Delegation idempotency (spec 04 §2): one row per (workspace, key) when a key is set.
sa.Index(
    "uq_activity_logs_ws_idempotency_key",
    activity_logs.c.workspace_id,
    activity_logs.c.idempotency_key,
    unique=True,
    postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    sqlite_where=sa.text("idempotency_key IS NOT NULL"),
)

# ---- scoped agent memories (spec 05 §2) and platform instructions (spec 04 §6) ----

MEMORY_SCOPES = ("LOCAL", "TEAM", "GLOBAL")

agent_memories = sa.Table(
    "agent_memories",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("scope", sa.String(10), nullable=False),
    sa.Column("namespace", sa.String(50), nullable=False, server_default="general"),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint("scope IN ('LOCAL','TEAM','GLOBAL')", name="scope_valid"),
    sa.Index("ix_agent_memories_workspace_id_namespace", "workspace_id", "namespace"),
    sa.Index("ix_agent_memories_scope_created_at", "scope", "created_at"),
)

INSTRUCTION_SCOPES = ("global", "team", "workspace")

platform_instructions = sa.Table(
    "platform_instructions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("scope_target", sa.Text),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint("scope IN ('global','team','workspace')", name="scope_valid"),
    sa.Index("ix_platform_instructions_scope_scope_target", "scope", "scope_target"),
)

# Platform-wide secrets (spec 05 §1); a workspace_secrets row with the same key overrides one (secrets/).
global_secrets = sa.Table(
    "global_secrets",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("key", sa.Text, nullable=False, unique=True),
    sa.Column("encrypted_value", sa.LargeBinary, nullable=False),
    sa.Column("encryption_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
)

# ---- schedules (spec 05 §6) ----

SCHEDULE_SOURCES = ("template", "runtime")

# Cron-driven prompts sent to a workspace through the A2A proxy (schedules/scheduler.py).
workspace_schedules = sa.Table(
    "workspace_schedules",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("cron_expr", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("last_run_at", UTCDateTime),
    sa.Column("next_run_at", UTCDateTime),
    sa.Column("run_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_status", sa.Text, nullable=False, server_default=""),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("source", sa.String(16), nullable=False, server_default="runtime"),
    sa.Column("consecutive_empty_runs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint("source IN ('template','runtime')", name="source_valid"),
    sa.UniqueConstraint("workspace_id", "name"),
    sa.Index("ix_workspace_schedules_due", "enabled", "next_run_at"),
)

# ---- KV memory (spec 05 §3) and approvals (spec 05 §4) ----

# Per-workspace key/value store with optimistic concurrency (kvmemory/). `version` starts at 1 and grows by
# one per write; the unique (workspace_id, key) settles concurrent creators. Expired rows stay until they
# are overwritten or deleted: they are invisible to reads but still hold their version.
workspace_memory = sa.Table(
    "workspace_memory",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("value", JSONType, nullable=False),  # any JSON document, `null` included
    sa.Column("expires_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    sa.UniqueConstraint("workspace_id", "key"),
)

APPROVAL_STATUSES = ("pending", "approved", "denied", "escalated")

# Human-in-the-loop approval requests (approvals/). The workspace reference has no ON DELETE: a decision
# record is never dropped as a side effect; purge deletes the rows explicitly (workspaces/store.py).
approval_requests = sa.Table(
    "approval_requests",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("task_id", sa.Text, nullable=False, server_default=""),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("context", JSONType, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("decided_by", sa.Text),
    sa.Column("decided_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint(
        "status IN (" + ",".join(f"'{s}'" for s in APPROVAL_STATUSES) + ")", name="status_valid"
    ),
    sa.Index("ix_approval_requests_workspace_id_created_at", "workspace_id", "created_at"),
    sa.Index("ix_approval_requests_status_created_at", "status", "created_at"),
)

# ---- workflow checkpoints (spec 05 §7) and the audit ledger (spec 05 §5) ----

# The last completed step of an agent's durable workflows, one row per (workflow, step); a repeated step
# overwrites its row (checkpoints/). `payload` is any JSON document, `null` included.
workflow_checkpoints = sa.Table(
    "workflow_checkpoints",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("workflow_id", sa.Text, nullable=False),
    sa.Column("step_name", sa.Text, nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completed_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("payload", JSONType),
    sa.UniqueConstraint("workspace_id", "workflow_id", "step_name"),
    sa.Index("ix_workflow_checkpoints_workspace_id_completed_at", "workspace_id", "completed_at"),
)

# HMAC-chained agent event log, written by the agents' ledger and only read here (audit/). `id` is the
# writer's text id; `prev_hmac` is the hmac of the same agent's previous row (NULL for its first).
# `operation` is task_start|llm_call|tool_call|task_end; no CHECK: the server verifies rows, it does not
# get to refuse them.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("timestamp", UTCDateTime, nullable=False),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("session_id", sa.Text, nullable=False),
    sa.Column("operation", sa.Text, nullable=False),
    sa.Column("input_hash", sa.Text),
    sa.Column("output_hash", sa.Text),
    sa.Column("model_used", sa.Text),
    sa.Column("human_oversight_flag", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("risk_flag", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("prev_hmac", sa.Text),
    sa.Column("hmac", sa.Text, nullable=False),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Index("ix_audit_events_workspace_id_timestamp", "workspace_id", "timestamp"),
    sa.Index("ix_audit_events_agent_id_timestamp", "agent_id", "timestamp"),
)

# ---- agents assigned to workspaces (spec 01 §3) ----

AGENT_STATUSES = ("active", "replaced", "removed")
_ACTIVE_AGENT = "status = 'active'"

# The model a workspace runs. History is kept: a replaced or removed agent stays as a row. At most one
# active agent per workspace, enforced by the partial unique index (the reference only checked first).
agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("removed_at", UTCDateTime),
    sa.Column("removal_reason", sa.String(32)),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.CheckConstraint("status IN ('active','replaced','removed')", name="status_valid"),
    sa.CheckConstraint(
        "removal_reason IS NULL OR removal_reason IN ('model_replaced','manual_removal')", name="reason_valid"
    ),
    sa.Index("ix_agents_workspace_id", "workspace_id"),
    sa.Index(
        "uq_agents_one_active",
        "workspace_id",
        unique=True,
        postgresql_where=sa.text(_ACTIVE_AGENT),
        sqlite_where=sa.text(_ACTIVE_AGENT),
    ),
)

# ---- org plugin allowlist (spec 06 §3.3, reference migration 026) ----

# Which plugins the workspaces of an org (a root workspace and its direct children) may install. An org
# without rows allows every plugin.
org_plugin_allowlist = sa.Table(
    "org_plugin_allowlist",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", ID, _ws_fk(), nullable=False),
    sa.Column("plugin_name", sa.Text, nullable=False),
    sa.Column("enabled_by", sa.Text, nullable=False),
    sa.Column("enabled_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.UniqueConstraint("org_id", "plugin_name"),
)

# ---- social channels (spec 06 §3.6): one row per (workspace, provider) ----
# `channel_config` holds the provider settings; its secret fields are stored as `ec1:` + base64(AES-GCM)
# (channels/configcrypt.py), never in clear. `channel_budget`: at most this many messages (NULL: no cap).
workspace_channels = sa.Table(
    "workspace_channels",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("workspace_id", ID, _ws_fk(), nullable=False),
    sa.Column("channel_type", sa.String(32), nullable=False),
    sa.Column("channel_config", JSONType, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("allowed_users", JSONType, nullable=False),
    sa.Column("last_message_at", UTCDateTime),
    sa.Column("message_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("channel_budget", sa.Integer),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.UniqueConstraint("workspace_id", "channel_type"),
    sa.Index("ix_workspace_channels_type_enabled", "channel_type", "enabled"),
)
