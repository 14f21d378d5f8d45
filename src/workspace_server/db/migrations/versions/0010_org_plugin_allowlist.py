"""org plugin allowlist

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import workspace_server.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "org_plugin_allowlist",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("plugin_name", sa.Text(), nullable=False),
        sa.Column("enabled_by", sa.Text(), nullable=False),
        sa.Column(
            "enabled_at",
            workspace_server.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["workspaces.id"],
            name=op.f("fk_org_plugin_allowlist_org_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_plugin_allowlist")),
        sa.UniqueConstraint("org_id", "plugin_name", name=op.f("uq_org_plugin_allowlist_org_id_plugin_name")),
    )


def downgrade() -> None:
    op.drop_table("org_plugin_allowlist")
