"""The governor's persisted state, one row per account; it survives restarts."""

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Boolean, Date, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Exact, UTCDateTime


class SafetyStateRecord(Base):
    __tablename__ = "safety_states"

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    emergency: Mapped[bool] = mapped_column(Boolean)
    halted_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    peak_equity: Mapped[Decimal] = mapped_column(Exact())
    day: Mapped[date] = mapped_column(Date)
    day_start_equity: Mapped[Decimal] = mapped_column(Exact())
    losing_streak: Mapped[int] = mapped_column(Integer)
    winning_streak: Mapped[int] = mapped_column(Integer)
    leverage_multiplier: Mapped[Decimal] = mapped_column(Exact())
    emergency_reset_equity: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
