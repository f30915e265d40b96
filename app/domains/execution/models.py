"""Positions, orders, fills, exit plans and their legs, and position events: the exchange's state as
the app records it. The paper exchange's book is rebuilt from these rows on start, so a restart
(even `kill -9`) keeps every position's stop and targets, and the monitor's cursor (`last_bar_ms`)
keeps a bar from being applied twice."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Exact, UTCDateTime


class Position(Base):
    __tablename__ = "positions"
    __table_args__ = (Index("ix_positions_account_status", "account_id", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    trade_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)  # the trade that opened it
    exchange: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # OPEN, CLOSED, LIQUIDATED
    leverage: Mapped[Decimal] = mapped_column(Exact())
    initial_amount: Mapped[Decimal] = mapped_column(Exact())
    amount: Mapped[Decimal] = mapped_column(Exact())  # contracts still open
    entry_price: Mapped[Decimal] = mapped_column(Exact())
    margin: Mapped[Decimal] = mapped_column(Exact())  # the isolated wallet
    realized_pnl: Mapped[Decimal] = mapped_column(Exact())  # net of fees and funding
    fees: Mapped[Decimal] = mapped_column(Exact())
    funding: Mapped[Decimal] = mapped_column(Exact())  # received (negative: paid)
    stop_price: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)  # the stop in force
    initial_stop: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)  # R is measured against it
    liquidation_price: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    trailing: Mapped[Any] = mapped_column(JSON, nullable=True)  # the trailing stop's state
    harvest: Mapped[Any] = mapped_column(JSON, nullable=True)  # what harvest already proposed, the peak R
    last_bar_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the monitor's cursor
    opened_bar_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the feed's bar at entry
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    close_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_position", "position_id"),
        Index("ix_orders_account_status", "account_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    position_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange_order_id: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(24))
    purpose: Mapped[str] = mapped_column(String(16))  # ENTRY, TP, SL, CLOSE, REDUCE
    amount: Mapped[Decimal] = mapped_column(Exact())
    price: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    stop_price: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    reduce_only: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(24))
    filled: Mapped[Decimal] = mapped_column(Exact())
    average_price: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    leg_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    source: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the arbiter's source
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FillRecord(Base):
    __tablename__ = "fills"
    __table_args__ = (Index("ix_fills_position", "position_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    position_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    price: Mapped[Decimal] = mapped_column(Exact())
    amount: Mapped[Decimal] = mapped_column(Exact())
    fee: Mapped[Decimal] = mapped_column(Exact())
    maker: Mapped[bool] = mapped_column(Boolean)
    realized_pnl: Mapped[Decimal] = mapped_column(Exact())  # of this fill, net of its fee
    filled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    bar_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ExitPlanRecord(Base):
    __tablename__ = "exit_plans"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    position_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    style: Mapped[str] = mapped_column(String(32))
    entry_price: Mapped[Decimal] = mapped_column(Exact())
    liquidation_price: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    stop_bound: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    notes: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ExitLegRecord(Base):
    __tablename__ = "exit_legs"
    __table_args__ = (Index("ix_exit_legs_position", "position_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    plan_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    position_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # TP, SL, TRAILING
    trigger_price: Mapped[Decimal] = mapped_column(Exact())
    fraction: Mapped[Decimal] = mapped_column(Exact())
    quantity: Mapped[Decimal] = mapped_column(Exact())
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # ACTIVE, FILLED, CANCELED, EXPIRED, NOT_PLACED
    order_client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PositionEvent(Base):
    """Funding settlements, liquidations, expiries and every arbiter action, with its source and reason."""

    __tablename__ = "position_events"
    __table_args__ = (Index("ix_position_events_position", "position_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    position_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    amount: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    realized_pnl: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    bar_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
