"""The governance reads (closed trades of the account, as exposure-memory events) and its decisions."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.governance.memory import MemoryEvent, compact_symbol
from app.domains.governance.models import GovernanceDecision
from app.domains.trading.models import Trade

trades = cast(Table, Trade.__table__)

_COLUMNS = (
    trades.c.id,
    trades.c.symbol,
    trades.c.side,
    trades.c.leverage,
    trades.c.notional,
    trades.c.margin,
    trades.c.realized_pnl,
    trades.c.confidence,
    trades.c.closed_at,
)


def to_event(row: Any) -> MemoryEvent:
    """pnl is the return on the margin in percent (realized_pnl net of fees / margin × 100), as the
    Strategy Brain measures a trade; the trades table has no volatility, so it is None."""
    margin: Decimal = row.margin
    pnl = float(row.realized_pnl / margin * 100) if margin > 0 else 0.0
    closed_at: datetime = row.closed_at
    return MemoryEvent(
        timestamp=closed_at,
        symbol=compact_symbol(row.symbol),
        side=row.side,
        leverage=float(row.leverage),
        pnl=pnl,
        confidence=float(row.confidence) if row.confidence is not None else None,
        volatility=None,
        position_size=float(row.notional),
        exit_reason="close",
    )


async def newest_closed(session: AsyncSession, account_id: str, limit: int) -> list[tuple[str, MemoryEvent]]:
    """The newest `limit` closed trades, oldest first, keyed `trade:<id>`."""
    rows = await session.execute(
        select(*_COLUMNS)
        .where(trades.c.account_id == account_id, trades.c.status == "CLOSED", trades.c.realized_pnl.is_not(None))
        .order_by(trades.c.closed_at.desc(), trades.c.id.desc())
        .limit(limit)
    )
    return [(f"trade:{row.id}", to_event(row)) for row in reversed(list(rows))]


async def closed_trade(session: AsyncSession, trade_id: str) -> MemoryEvent | None:
    row = (
        await session.execute(
            select(*_COLUMNS).where(
                trades.c.id == uuid.UUID(trade_id), trades.c.status == "CLOSED", trades.c.realized_pnl.is_not(None)
            )
        )
    ).first()
    return to_event(row) if row is not None else None


async def latest_decision(session: AsyncSession, account_id: str) -> GovernanceDecision | None:
    """The newest stored policy decision of the account: the policy in force at the last stop."""
    return (
        await session.execute(
            select(GovernanceDecision)
            .where(GovernanceDecision.account_id == account_id)
            .order_by(GovernanceDecision.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def recent_decisions(session: AsyncSession, account_id: str, limit: int) -> list[GovernanceDecision]:
    return list(
        (
            await session.execute(
                select(GovernanceDecision)
                .where(GovernanceDecision.account_id == account_id)
                .order_by(GovernanceDecision.id.desc())
                .limit(limit)
            )
        ).scalars()
    )


async def closed_since(
    session: AsyncSession, account_id: str, since: datetime, limit: int
) -> list[tuple[str, MemoryEvent, datetime]]:
    """Closed trades with closed_at >= `since`, oldest first (other workers' closes reach the
    deciding process this way, not through its in-process events)."""
    rows = await session.execute(
        select(*_COLUMNS)
        .where(
            trades.c.account_id == account_id,
            trades.c.status == "CLOSED",
            trades.c.realized_pnl.is_not(None),
            trades.c.closed_at >= since,
        )
        .order_by(trades.c.closed_at, trades.c.id)
        .limit(limit)
    )
    return [(f"trade:{row.id}", to_event(row), row.closed_at) for row in rows]
