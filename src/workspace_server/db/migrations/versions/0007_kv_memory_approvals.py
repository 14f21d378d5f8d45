"""workspace_memory, approval_requests

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import workspace_server.db.types
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
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
        "workspace_memory",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        _ts("expires_at", required=False),
        _ts("updated_at"),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_memory_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_memory")),
        sa.UniqueConstraint("workspace_id", "key", name=op.f("uq_workspace_memory_workspace_id_key")),
    )
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.Text(), server_default="", nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=True),
        _ts("decided_at", required=False),
        _ts("created_at"),
        sa.CheckConstraint(
            "status IN ('pending','approved','denied','escalated')",
            name=op.f("ck_approval_requests_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_approval_requests_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_requests")),
    )
    op.create_index(
        "ix_approval_requests_workspace_id_created_at", "approval_requests", ["workspace_id", "created_at"]
    )
    op.create_index("ix_approval_requests_status_created_at", "approval_requests", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_approval_requests_status_created_at", table_name="approval_requests")
    op.drop_index("ix_approval_requests_workspace_id_created_at", table_name="approval_requests")
    op.drop_table("approval_requests")
    op.drop_table("workspace_memory")
