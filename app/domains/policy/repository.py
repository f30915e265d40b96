"""SQL of the policy audit trail."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.policy.models import PolicyChange


class PolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, change: PolicyChange) -> None:
        self.session.add(change)

    async def history(self, limit: int, offset: int, kind: str | None = None) -> tuple[list[PolicyChange], int]:
        query = select(PolicyChange)
        if kind:
            query = query.where(PolicyChange.kind == kind)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.execute(
            query.order_by(PolicyChange.created_at.desc(), PolicyChange.id.desc()).limit(limit).offset(offset)
        )
        return list(rows.scalars()), int(total or 0)
