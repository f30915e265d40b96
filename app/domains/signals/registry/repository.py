"""All SQL of the model registry."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.signals.registry.models import (
    CANDIDATE,
    CHAMPION,
    RETIRED,
    ModelPromotionRecord,
    ModelVersion,
)

promotions = cast(Table, ModelPromotionRecord.__table__)


class RegistryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add_version(self, version: ModelVersion) -> None:
        self.session.add(version)

    async def get(self, version_id: uuid.UUID, *, for_update: bool = False) -> ModelVersion | None:
        query = select(ModelVersion).where(ModelVersion.id == version_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list_versions(
        self, kind: str | None, status: str | None, limit: int, offset: int
    ) -> tuple[list[ModelVersion], int]:
        query = select(ModelVersion)
        if kind:
            query = query.where(ModelVersion.kind == kind)
        if status:
            query = query.where(ModelVersion.status == status)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.execute(
            query.order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc()).limit(limit).offset(offset)
        )
        return list(rows.scalars()), int(total or 0)

    async def champion_of(self, kind: str, *, for_update: bool = False) -> ModelVersion | None:
        query = select(ModelVersion).where(ModelVersion.kind == kind, ModelVersion.status == CHAMPION)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query.order_by(ModelVersion.promoted_at.desc()).limit(1))).scalar()

    async def candidates_of(self, kind: str) -> list[ModelVersion]:
        """The candidates of `kind`, newest first."""
        rows = await self.session.execute(
            select(ModelVersion)
            .where(ModelVersion.kind == kind, ModelVersion.status == CANDIDATE)
            .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        )
        return list(rows.scalars())

    async def versions_of(self, kind: str) -> list[ModelVersion]:
        rows = await self.session.execute(select(ModelVersion).where(ModelVersion.kind == kind))
        return list(rows.scalars())

    async def live_artifact_paths(self) -> list[str]:
        """Artifact paths of every version not retired, of any kind."""
        rows = await self.session.execute(select(ModelVersion.artifact_path).where(ModelVersion.status != RETIRED))
        return list(rows.scalars())

    async def set_status(self, ids: Sequence[uuid.UUID], status: str, at: datetime) -> None:
        """Move versions to `status`, stamping promoted_at (champion) or retired_at (retired)."""
        if not ids:
            return
        values: dict[str, Any] = {"status": status}
        if status == CHAMPION:
            values["promoted_at"] = at
        elif status == RETIRED:
            values["retired_at"] = at
        await self.session.execute(update(ModelVersion).where(ModelVersion.id.in_(ids)).values(values))

    async def insert_promotion(self, row: dict[str, Any]) -> None:
        await self.session.execute(insert(promotions).values(row))

    async def promotion_of(self, candidate_id: uuid.UUID) -> ModelPromotionRecord | None:
        """The newest decision that promoted `candidate_id`, if any."""
        query = (
            select(ModelPromotionRecord)
            .where(ModelPromotionRecord.candidate_id == candidate_id, ModelPromotionRecord.promoted.is_(True))
            .order_by(ModelPromotionRecord.created_at.desc(), ModelPromotionRecord.id.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).scalar()

    async def list_promotions(
        self, kind: str | None, limit: int, offset: int
    ) -> tuple[list[ModelPromotionRecord], int]:
        query = select(ModelPromotionRecord)
        if kind:
            query = query.where(ModelPromotionRecord.kind == kind)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.execute(
            query.order_by(ModelPromotionRecord.created_at.desc(), ModelPromotionRecord.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return list(rows.scalars()), int(total or 0)
