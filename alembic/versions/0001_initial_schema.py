"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 19:40:38.802780
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op


revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Exact decimals: NUMERIC on Postgres, text on SQLite (see app.core.db.Exact).
EXACT = sa.Numeric(38, 18).with_variant(sa.String(64), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("starting_balance", EXACT, nullable=False),
        sa.Column("equity", EXACT, nullable=False),
        sa.Column("open_positions", sa.Integer(), nullable=False),
        sa.Column("open_notional", EXACT, nullable=False),
        sa.Column("used_margin", EXACT, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "policy_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("from_value", sa.JSON(), nullable=True),
        sa.Column("to_value", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_changes")),
    )
    with op.batch_alter_table("policy_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_policy_changes_created_at", ["created_at"], unique=False
        )

    op.create_table(
        "risk_decisions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("assumptions", sa.JSON(), nullable=False),
        sa.Column("profile_name", sa.String(length=32), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("notional", EXACT, nullable=False),
        sa.Column("leverage", EXACT, nullable=False),
        sa.Column("price", EXACT, nullable=False),
        sa.Column("stop_loss", EXACT, nullable=True),
        sa.Column("confidence", EXACT, nullable=True),
        sa.Column("risk_pct", EXACT, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("trade_id", sa.Uuid(), nullable=True),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_decisions")),
        sa.UniqueConstraint(
            "client_order_id", name=op.f("uq_risk_decisions_client_order_id")
        ),
    )
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_risk_decisions_account_created",
            ["account_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "safety_states",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("emergency", sa.Boolean(), nullable=False),
        sa.Column("halted_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("peak_equity", EXACT, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("day_start_equity", EXACT, nullable=False),
        sa.Column("losing_streak", sa.Integer(), nullable=False),
        sa.Column("winning_streak", sa.Integer(), nullable=False),
        sa.Column("leverage_multiplier", EXACT, nullable=False),
        sa.Column("emergency_reset_equity", EXACT, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_safety_states")),
    )
    op.create_table(
        "equity_snapshots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("equity", EXACT, nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=False),
        sa.Column("trade_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_equity_snapshots_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_equity_snapshots")),
    )
    with op.batch_alter_table("equity_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_equity_snapshots_account_at", ["account_id", "created_at"], unique=False
        )

    op.create_table(
        "trades",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=True),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("leverage", EXACT, nullable=False),
        sa.Column("requested_notional", EXACT, nullable=False),
        sa.Column("notional", EXACT, nullable=False),
        sa.Column("quantity", EXACT, nullable=False),
        sa.Column("margin", EXACT, nullable=False),
        sa.Column("entry_price", EXACT, nullable=False),
        sa.Column("stop_loss", EXACT, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("exit_price", EXACT, nullable=True),
        sa.Column("entry_fee", EXACT, nullable=False),
        sa.Column("exit_fee", EXACT, nullable=True),
        sa.Column("realized_pnl", EXACT, nullable=True),
        sa.Column("confidence", EXACT, nullable=True),
        sa.Column("signal_source", sa.String(length=64), nullable=True),
        sa.Column("risk_profile_name", sa.String(length=32), nullable=False),
        sa.Column("decision_id", sa.Uuid(), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_trace_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_trades_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trades")),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_trades_client_order_id")),
    )
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.create_index(
            "ix_trades_account_status", ["account_id", "status"], unique=False
        )
        batch_op.create_index("ix_trades_opened_at", ["opened_at"], unique=False)
        batch_op.create_index("ix_trades_symbol", ["symbol"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.drop_index("ix_trades_symbol")
        batch_op.drop_index("ix_trades_opened_at")
        batch_op.drop_index("ix_trades_account_status")

    op.drop_table("trades")
    with op.batch_alter_table("equity_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_equity_snapshots_account_at")

    op.drop_table("equity_snapshots")
    op.drop_table("safety_states")
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_risk_decisions_account_created")

    op.drop_table("risk_decisions")
    with op.batch_alter_table("policy_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_policy_changes_created_at")

    op.drop_table("policy_changes")
    op.drop_table("accounts")
