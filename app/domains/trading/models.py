"""Accounts, trades and equity snapshots. Money and prices are exact decimals."""

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Exact, UTCDateTime


class Account(Base):
    """The paper account. Its row is the lock that serializes every trade of the account;
    open positions and exposure are kept here under that lock so a check reads them in O(1)."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    starting_balance: Mapped[Decimal] = mapped_column(Exact())
    equity: Mapped[Decimal] = mapped_column(Exact())
    open_positions: Mapped[int] = mapped_column(Integer)
    open_notional: Mapped[Decimal] = mapped_column(Exact())
    used_margin: Mapped[Decimal] = mapped_column(Exact())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Trade(Base):
    __tablename__ = "trades"
    __table_args__ = (
        Index("ix_trades_account_status", "account_id", "status"),
        Index("ix_trades_symbol", "symbol"),
        Index("ix_trades_opened_at", "opened_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    client_order_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    leverage: Mapped[Decimal] = mapped_column(Exact())
    requested_notional: Mapped[Decimal] = mapped_column(Exact())
    notional: Mapped[Decimal] = mapped_column(Exact())
    quantity: Mapped[Decimal] = mapped_column(Exact())
    margin: Mapped[Decimal] = mapped_column(Exact())
    entry_price: Mapped[Decimal] = mapped_column(Exact())
    stop_loss: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    exit_price: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    entry_fee: Mapped[Decimal] = mapped_column(Exact())
    exit_fee: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    realized_pnl: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    confidence: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    signal_source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    risk_profile_name: Mapped[str] = mapped_column(String(32))
    decision_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    trace_id: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    close_trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class EquitySnapshot(Base):
    __tablename__ = "equity_snapshots"
    __table_args__ = (Index("ix_equity_snapshots_account_at", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    equity: Mapped[Decimal] = mapped_column(Exact())
    cause: Mapped[str] = mapped_column(String(32))
    trade_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
