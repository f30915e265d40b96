"""Model versions and the audit trail of promotion decisions.

Artifacts live on disk in native formats (never pickle); a row records where they are and the
SHA-256 of the weights, so a loaded model can be checked against what was evaluated.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime
from app.domains.signals.models import MODEL_KINDS

KINDS = (*MODEL_KINDS, "ensemble")
CANDIDATE = "candidate"
CHAMPION = "champion"
RETIRED = "retired"
STATUSES = (CANDIDATE, CHAMPION, RETIRED)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        Index("ix_model_versions_kind_status", "kind", "status"),
        Index("ix_model_versions_kind_created", "kind", "created_at"),
        # At most one champion per kind, also when two promotions race with no champion to lock.
        Index(
            "uq_model_versions_one_champion",
            "kind",
            unique=True,
            postgresql_where=text("status = 'champion'"),
            sqlite_where=text("status = 'champion'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    symbols: Mapped[list[str]] = mapped_column(JSON)
    timeframe: Mapped[str] = mapped_column(String(8))
    train_start: Mapped[datetime] = mapped_column(UTCDateTime())
    train_end: Mapped[datetime] = mapped_column(UTCDateTime())
    test_start: Mapped[datetime] = mapped_column(UTCDateTime())
    test_end: Mapped[datetime] = mapped_column(UTCDateTime())
    features: Mapped[list[str]] = mapped_column(JSON)
    code_version: Mapped[str] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    artifact_path: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ModelPromotionRecord(Base):
    """One promotion decision, promoted or not, with the metrics it was made on."""

    __tablename__ = "model_promotions"
    __table_args__ = (Index("ix_model_promotions_kind_created", "kind", "created_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    kind: Mapped[str] = mapped_column(String(32))
    candidate_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    champion_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    promoted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    candidate_metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    champion_metrics: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
