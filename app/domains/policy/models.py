"""The policy audit trail (in the database, beside the trades it governs)."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class PolicyChange(Base):
    __tablename__ = "policy_changes"
    __table_args__ = (Index("ix_policy_changes_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    kind: Mapped[str] = mapped_column(String(32))
    from_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    to_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyStateRecord(Base):
    """The durable copy of the policy state: written in the transaction that audits each change.

    One row per deployment (`id`). The state is the backend's JSON document, kept as text so
    an unreadable copy is detected on start instead of being silently replaced by defaults.
    """

    __tablename__ = "policy_state"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
