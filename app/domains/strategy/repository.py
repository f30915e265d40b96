"""The Strategy Brain's reads: closed trades of an account and its starting balance (SQL only here)."""

from decimal import Decimal
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.strategy.performance import MANUAL, ClosedTrade
from app.domains.trading.models import Account, Trade

trades = cast(Table, Trade.__table__)
accounts = cast(Table, Account.__table__)


class StrategyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def starting_balance(self, account_id: str) -> Decimal | None:
        balance: Decimal | None = await self.session.scalar(
            select(accounts.c.starting_balance).where(accounts.c.id == account_id)
        )
        return balance

    async def closed_trades(self, account_id: str) -> list[ClosedTrade]:
        """Every closed trade with a realized pnl, in order of close (ties by id, so stable)."""
        rows = await self.session.execute(
            select(trades.c.signal_source, trades.c.realized_pnl, trades.c.margin, trades.c.closed_at)
            .where(
                trades.c.account_id == account_id,
                trades.c.status == "CLOSED",
                trades.c.realized_pnl.is_not(None),
                trades.c.closed_at.is_not(None),
            )
            .order_by(trades.c.closed_at, trades.c.id)
        )
        return [
            ClosedTrade(source=source or MANUAL, realized_pnl=pnl, margin=margin, closed_at=closed_at)
            for source, pnl, margin, closed_at in rows
        ]
