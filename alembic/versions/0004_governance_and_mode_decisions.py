"""portfolio policy and operating-mode decisions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "governance_decisions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous", sa.String(length=16), nullable=True),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_governance_decisions")),
    )
    op.create_index("ix_governance_decisions_account_id", "governance_decisions", ["account_id", "id"])
    op.create_table(
        "mode_decisions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("previous", sa.String(length=16), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("decided", sa.String(length=16), nullable=True),
        sa.Column("pinned", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mode_decisions")),
    )
    op.create_index("ix_mode_decisions_account_id", "mode_decisions", ["account_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_mode_decisions_account_id", table_name="mode_decisions")
    op.drop_table("mode_decisions")
    op.drop_index("ix_governance_decisions_account_id", table_name="governance_decisions")
    op.drop_table("governance_decisions")
