"""agent_memories, platform_instructions

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import workspace_server.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Postgres only: the full-text index the memories search uses (`plainto_tsquery('english', q)`).
FTS_INDEX = "ix_agent_memories_content_fts"


def _ts(name: str) -> sa.Column:
    return sa.Column(
        name,
        workspace_server.db.types.UTCDateTime(timezone=True),
        server_default=sa.text("CURRENT_TIMESTAMP"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "agent_memories",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("namespace", sa.String(length=50), server_default="general", nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("scope IN ('LOCAL','TEAM','GLOBAL')", name=op.f("ck_agent_memories_scope_valid")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_agent_memories_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_memories")),
    )
    op.create_index(
        "ix_agent_memories_workspace_id_namespace", "agent_memories", ["workspace_id", "namespace"]
    )
    op.create_index("ix_agent_memories_scope_created_at", "agent_memories", ["scope", "created_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX {FTS_INDEX} ON agent_memories USING gin (to_tsvector('english', content))")
    op.create_table(
        "platform_instructions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_target", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(
            "scope IN ('global','team','workspace')", name=op.f("ck_platform_instructions_scope_valid")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_instructions")),
    )
    op.create_index(
        "ix_platform_instructions_scope_scope_target",
        "platform_instructions",
        ["scope", "scope_target"],
    )


def downgrade() -> None:
    op.drop_index("ix_platform_instructions_scope_scope_target", table_name="platform_instructions")
    op.drop_table("platform_instructions")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {FTS_INDEX}")
    op.drop_index("ix_agent_memories_scope_created_at", table_name="agent_memories")
    op.drop_index("ix_agent_memories_workspace_id_namespace", table_name="agent_memories")
    op.drop_table("agent_memories")
