"""Reads and writes of the operating-mode trail."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.modes.models import ModeDecisionRecord


async def recent(session: AsyncSession, account_id: str, limit: int) -> list[ModeDecisionRecord]:
    """The newest rows of the account, newest first (the first is the state in force)."""
    return list(
        (
            await session.execute(
                select(ModeDecisionRecord)
                .where(ModeDecisionRecord.account_id == account_id)
                .order_by(ModeDecisionRecord.id.desc())
                .limit(limit)
            )
        ).scalars()
    )


async def page(session: AsyncSession, account_id: str, limit: int, offset: int) -> list[ModeDecisionRecord]:
    return list(
        (
            await session.execute(
                select(ModeDecisionRecord)
                .where(ModeDecisionRecord.account_id == account_id)
                .order_by(ModeDecisionRecord.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).scalars()
    )
