"""positions, orders, fills, exit plans and legs, position events

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 06:20:55.884498
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

# Exact decimals: NUMERIC on Postgres, text on SQLite (see app.core.db.Exact).
EXACT = sa.Numeric(38, 18).with_variant(sa.String(64), "sqlite")

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exit_legs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("trigger_price", EXACT, nullable=False),
        sa.Column("fraction", EXACT, nullable=False),
        sa.Column("quantity", EXACT, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("order_client_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exit_legs")),
    )
    with op.batch_alter_table("exit_legs", schema=None) as batch_op:
        batch_op.create_index("ix_exit_legs_position", ["position_id"], unique=False)

    op.create_table(
        "exit_plans",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=False),
        sa.Column("style", sa.String(length=32), nullable=False),
        sa.Column("entry_price", EXACT, nullable=False),
        sa.Column("liquidation_price", EXACT, nullable=True),
        sa.Column("stop_bound", EXACT, nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exit_plans")),
        sa.UniqueConstraint("position_id", name=op.f("uq_exit_plans_position_id")),
    )
    op.create_table(
        "fills",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=False),
        sa.Column("price", EXACT, nullable=False),
        sa.Column("amount", EXACT, nullable=False),
        sa.Column("fee", EXACT, nullable=False),
        sa.Column("maker", sa.Boolean(), nullable=False),
        sa.Column("realized_pnl", EXACT, nullable=False),
        sa.Column("filled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bar_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
    )
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.create_index("ix_fills_position", ["position_id"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=True),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("exchange_order_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("amount", EXACT, nullable=False),
        sa.Column("price", EXACT, nullable=True),
        sa.Column("stop_price", EXACT, nullable=True),
        sa.Column("reduce_only", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("filled", EXACT, nullable=False),
        sa.Column("average_price", EXACT, nullable=True),
        sa.Column("leg_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_orders_client_order_id")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_account_status", ["account_id", "status"], unique=False)
        batch_op.create_index("ix_orders_position", ["position_id"], unique=False)

    op.create_table(
        "position_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("amount", EXACT, nullable=True),
        sa.Column("realized_pnl", EXACT, nullable=True),
        sa.Column("bar_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_position_events")),
    )
    with op.batch_alter_table("position_events", schema=None) as batch_op:
        batch_op.create_index("ix_position_events_position", ["position_id", "id"], unique=False)

    op.create_table(
        "positions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("trade_id", sa.Uuid(), nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("leverage", EXACT, nullable=False),
        sa.Column("initial_amount", EXACT, nullable=False),
        sa.Column("amount", EXACT, nullable=False),
        sa.Column("entry_price", EXACT, nullable=False),
        sa.Column("margin", EXACT, nullable=False),
        sa.Column("realized_pnl", EXACT, nullable=False),
        sa.Column("fees", EXACT, nullable=False),
        sa.Column("funding", EXACT, nullable=False),
        sa.Column("stop_price", EXACT, nullable=True),
        sa.Column("initial_stop", EXACT, nullable=True),
        sa.Column("liquidation_price", EXACT, nullable=True),
        sa.Column("trailing", sa.JSON(), nullable=True),
        sa.Column("harvest", sa.JSON(), nullable=True),
        sa.Column("last_bar_ms", sa.BigInteger(), nullable=True),
        sa.Column("opened_bar_ms", sa.BigInteger(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint("trade_id", name=op.f("uq_positions_trade_id")),
    )
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.create_index("ix_positions_account_status", ["account_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_index("ix_positions_account_status")

    op.drop_table("positions")
    with op.batch_alter_table("position_events", schema=None) as batch_op:
        batch_op.drop_index("ix_position_events_position")

    op.drop_table("position_events")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_position")
        batch_op.drop_index("ix_orders_account_status")

    op.drop_table("orders")
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.drop_index("ix_fills_position")

    op.drop_table("fills")
    op.drop_table("exit_plans")
    with op.batch_alter_table("exit_legs", schema=None) as batch_op:
        batch_op.drop_index("ix_exit_legs_position")

    op.drop_table("exit_legs")
