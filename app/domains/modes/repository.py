"""Reads and writes of the operating-mode trail."""

from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.modes.models import ModeDecisionRecord
from app.domains.trading.models import Account

accounts = cast(Table, Account.__table__)


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


async def newest(session: AsyncSession, account_id: str) -> ModeDecisionRecord | None:
    rows = await recent(session, account_id, 1)
    return rows[0] if rows else None


async def newest_pin(session: AsyncSession, account_id: str) -> ModeDecisionRecord | None:
    return (
        await session.execute(
            select(ModeDecisionRecord)
            .where(ModeDecisionRecord.account_id == account_id, ModeDecisionRecord.kind == "pin")
            .order_by(ModeDecisionRecord.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def lock_account(session: AsyncSession, account_id: str) -> None:
    """Serialize the trail's writers of every process: the account row, locked until commit (SQLite
    serializes writers itself). A row is written from the newest one read under this lock, so a pin
    and a decision written at the same time by two processes never lose each other."""
    await session.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())
