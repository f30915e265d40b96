"""Operating-mode decisions and operator pins: the trail a restart restores the mode from."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class ModeDecisionRecord(Base):
    """One row per decided mode change, per pin and per unpin.

    `kind` is `decision` (the rules chose `decided`), `pin` (an operator fixed `pinned`) or `unpin`;
    `mode` is the mode in force after the row (the pin when one holds, else the decided mode; null
    before the first decision).
    """

    __tablename__ = "mode_decisions"
    __table_args__ = (Index("ix_mode_decisions_account_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    previous: Mapped[str | None] = mapped_column(String(16), nullable=True)
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    decided: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pinned: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    inputs: Mapped[Any] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(128))
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
