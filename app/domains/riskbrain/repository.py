"""The Risk Brain's reads: the equity curve, the account's equity and its open positions (read-only SQL)."""

from decimal import Decimal
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.riskbrain.metrics import Position
from app.domains.trading.models import Account, EquitySnapshot, Trade

accounts = cast(Table, Account.__table__)
trades = cast(Table, Trade.__table__)
equity_snapshots = cast(Table, EquitySnapshot.__table__)

# An opening moves equity only by its entry fee, which the next close's snapshot includes again
# (equity is realized): the curve is sampled at every other snapshot, so returns are per realized step.
SKIPPED_CAUSES = ("trade_opened",)


async def equity_curve(session: AsyncSession, account_id: str, points: int) -> list[Decimal]:
    """The last `points` equities of the realized curve, oldest first."""
    rows = await session.execute(
        select(equity_snapshots.c.equity)
        .where(equity_snapshots.c.account_id == account_id, equity_snapshots.c.cause.not_in(SKIPPED_CAUSES))
        .order_by(equity_snapshots.c.created_at.desc(), equity_snapshots.c.id.desc())
        .limit(points)
    )
    return list(reversed(list(rows.scalars())))


async def account_equity(session: AsyncSession, account_id: str) -> Decimal | None:
    equity: Decimal | None = await session.scalar(select(accounts.c.equity).where(accounts.c.id == account_id))
    return equity


async def open_positions(session: AsyncSession, account_id: str) -> list[Position]:
    rows = await session.execute(
        select(trades.c.symbol, trades.c.side, trades.c.notional, trades.c.margin).where(
            trades.c.account_id == account_id, trades.c.status == "OPEN"
        )
    )
    return [Position(symbol=s, side=side, notional=n, margin=m) for s, side, n, m in rows]
