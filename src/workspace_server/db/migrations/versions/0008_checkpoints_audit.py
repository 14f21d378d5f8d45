"""workflow_checkpoints, audit_events

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import workspace_server.db.types
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, default_now: bool = True) -> sa.Column:
    if not default_now:
        return sa.Column(name, workspace_server.db.types.UTCDateTime(timezone=True), nullable=False)
    return sa.Column(
        name,
        workspace_server.db.types.UTCDateTime(timezone=True),
        server_default=sa.text("CURRENT_TIMESTAMP"),
        nullable=False,
    )


def _workspace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "workflow_checkpoints",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("step_name", sa.Text(), nullable=False),
        sa.Column("step_index", sa.Integer(), server_default="0", nullable=False),
        _ts("completed_at"),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        _workspace_fk("workflow_checkpoints"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_checkpoints")),
        sa.UniqueConstraint(
            "workspace_id",
            "workflow_id",
            "step_name",
            name=op.f("uq_workflow_checkpoints_workspace_id_workflow_id_step_name"),
        ),
    )
    op.create_index(
        "ix_workflow_checkpoints_workspace_id_completed_at",
        "workflow_checkpoints",
        ["workspace_id", "completed_at"],
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Text(), nullable=False),
        _ts("timestamp", default_now=False),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("input_hash", sa.Text(), nullable=True),
        sa.Column("output_hash", sa.Text(), nullable=True),
        sa.Column("model_used", sa.Text(), nullable=True),
        sa.Column("human_oversight_flag", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("risk_flag", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("prev_hmac", sa.Text(), nullable=True),
        sa.Column("hmac", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        _workspace_fk("audit_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_workspace_id_timestamp", "audit_events", ["workspace_id", "timestamp"])
    op.create_index("ix_audit_events_agent_id_timestamp", "audit_events", ["agent_id", "timestamp"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_agent_id_timestamp", table_name="audit_events")
    op.drop_index("ix_audit_events_workspace_id_timestamp", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_workflow_checkpoints_workspace_id_completed_at", table_name="workflow_checkpoints")
    op.drop_table("workflow_checkpoints")
