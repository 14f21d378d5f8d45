"""a2a_queue, workspace_token_usage, delegation idempotency index

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import workspace_server.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_QUEUE_KEY = "idempotency_key IS NOT NULL AND status IN ('queued','dispatched')"
KEY_SET = "idempotency_key IS NOT NULL"


def _ts(name: str, *, nullable: bool = True, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        workspace_server.db.types.UTCDateTime(timezone=True),
        server_default=sa.text("CURRENT_TIMESTAMP") if default else None,
        nullable=nullable,
    )


def upgrade() -> None:
    op.create_table(
        "a2a_queue",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("caller_id", sa.Text(), nullable=True),
        sa.Column("priority", sa.SmallInteger(), server_default="50", nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("method", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        _ts("enqueued_at", nullable=False, default=True),
        _ts("dispatched_at"),
        _ts("completed_at"),
        _ts("expires_at"),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued','dispatched','completed','dropped','failed')",
            name=op.f("ck_a2a_queue_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_a2a_queue_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_a2a_queue")),
    )
    op.create_index("ix_a2a_queue_claim", "a2a_queue", ["workspace_id", "status", "priority", "enqueued_at"])
    op.create_index(
        "uq_a2a_queue_active_key",
        "a2a_queue",
        ["workspace_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text(ACTIVE_QUEUE_KEY),
        sqlite_where=sa.text(ACTIVE_QUEUE_KEY),
    )
    op.create_table(
        "workspace_token_usage",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        _ts("period_start", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("call_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "estimated_cost_usd",
            sa.Numeric(12, 6).with_variant(sa.Float(), "sqlite"),
            server_default="0",
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_token_usage_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_token_usage")),
        sa.UniqueConstraint(
            "workspace_id", "period_start", name=op.f("uq_workspace_token_usage_workspace_id_period_start")
        ),
    )
    op.create_index(
        "uq_activity_logs_ws_idempotency_key",
        "activity_logs",
        ["workspace_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text(KEY_SET),
        sqlite_where=sa.text(KEY_SET),
    )


def downgrade() -> None:
    op.drop_index("uq_activity_logs_ws_idempotency_key", table_name="activity_logs")
    op.drop_table("workspace_token_usage")
    op.drop_index("uq_a2a_queue_active_key", table_name="a2a_queue")
    op.drop_index("ix_a2a_queue_claim", table_name="a2a_queue")
    op.drop_table("a2a_queue")
