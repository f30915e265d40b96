"""Every RiskGuard decision, allowed or denied, with its reasons and the limits in force."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Exact, UTCDateTime


class RiskDecisionRecord(Base):
    __tablename__ = "risk_decisions"
    __table_args__ = (Index("ix_risk_decisions_account_created", "account_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    client_order_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    allowed: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    assumptions: Mapped[list[str]] = mapped_column(JSON)
    profile_name: Mapped[str] = mapped_column(String(32))
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    notional: Mapped[Decimal] = mapped_column(Exact())
    leverage: Mapped[Decimal] = mapped_column(Exact())
    price: Mapped[Decimal] = mapped_column(Exact())
    stop_loss: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    confidence: Mapped[Decimal | None] = mapped_column(Exact(), nullable=True)
    risk_pct: Mapped[Decimal] = mapped_column(Exact())
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trade_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
