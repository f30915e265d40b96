"""The portfolio policy's decisions, kept so that a restart restores the policy in force."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class GovernanceDecision(Base):
    """One row per policy change (the newest row of an account is the policy in force)."""

    __tablename__ = "governance_decisions"
    __table_args__ = (Index("ix_governance_decisions_account_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    previous: Mapped[str | None] = mapped_column(String(16), nullable=True)
    policy: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(32))
    inputs: Mapped[Any] = mapped_column(JSON)
