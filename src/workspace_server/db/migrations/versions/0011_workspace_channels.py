"""workspace channels (Slack, Discord, Telegram, Lark)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import workspace_server.db.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "workspace_channels",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("channel_type", sa.String(length=32), nullable=False),
        sa.Column("channel_config", json_type, nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("allowed_users", json_type, nullable=False),
        sa.Column("last_message_at", workspace_server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("channel_budget", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            workspace_server.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            workspace_server.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_channels_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_channels")),
        sa.UniqueConstraint(
            "workspace_id", "channel_type", name=op.f("uq_workspace_channels_workspace_id_channel_type")
        ),
    )
    with op.batch_alter_table("workspace_channels", schema=None) as batch_op:
        batch_op.create_index("ix_workspace_channels_type_enabled", ["channel_type", "enabled"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workspace_channels", schema=None) as batch_op:
        batch_op.drop_index("ix_workspace_channels_type_enabled")
    op.drop_table("workspace_channels")
