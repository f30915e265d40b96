"""Strategy Brain service: reads the closed trades, computes per source statistics and recommendations."""

import asyncio
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import ServiceUnavailable
from app.domains.strategy.performance import (
    ClosedTrade,
    Recommendations,
    group_by_source,
    performance,
    recommend,
)
from app.domains.strategy.repository import StrategyRepository

# Above this many trades the statistics run in a worker thread, so the event loop is not held
# for more than about a millisecond.
INLINE_TRADES = 1000


def evaluate(closed: list[ClosedTrade], base: Decimal, min_trades: int) -> Recommendations:
    """The whole computation, pure: per source performance, then recommendations."""
    return recommend((performance(name, group, base) for name, group in group_by_source(closed).items()), min_trades)


class StrategyService:
    """Stateless: every call reads the trades table, so answers follow every close at once."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        account_id: str,
        min_trades: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._sessions = sessions
        self.account_id = account_id
        self.min_trades = min_trades
        self.clock = clock

    async def recommendations(self) -> tuple[Recommendations, Decimal, datetime]:
        """(recommendations, the starting balance drawdowns are measured from, as of)."""
        as_of = self.clock()
        async with self._sessions() as session:
            repository = StrategyRepository(session)
            base = await repository.starting_balance(self.account_id)
            if base is None:
                raise ServiceUnavailable(f"account {self.account_id!r} is not initialised")
            closed = await repository.closed_trades(self.account_id)
        if len(closed) > INLINE_TRADES:
            return await asyncio.to_thread(evaluate, closed, base, self.min_trades), base, as_of
        return evaluate(closed, base, self.min_trades), base, as_of
