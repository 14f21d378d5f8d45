"""workspace_schedules

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import workspace_server.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, required: bool = True) -> sa.Column:
    if not required:
        return sa.Column(name, workspace_server.db.types.UTCDateTime(timezone=True), nullable=True)
    return sa.Column(
        name,
        workspace_server.db.types.UTCDateTime(timezone=True),
        server_default=sa.text("CURRENT_TIMESTAMP"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "workspace_schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("cron_expr", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        _ts("last_run_at", required=False),
        _ts("next_run_at", required=False),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_status", sa.Text(), server_default="", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("source", sa.String(length=16), server_default="runtime", nullable=False),
        sa.Column("consecutive_empty_runs", sa.Integer(), server_default="0", nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(
            "source IN ('template','runtime')", name=op.f("ck_workspace_schedules_source_valid")
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_schedules_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_schedules")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_workspace_schedules_workspace_id_name")),
    )
    op.create_index("ix_workspace_schedules_due", "workspace_schedules", ["enabled", "next_run_at"])


def downgrade() -> None:
    op.drop_index("ix_workspace_schedules_due", table_name="workspace_schedules")
    op.drop_table("workspace_schedules")
