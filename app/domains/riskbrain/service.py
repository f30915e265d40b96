"""Gathers the Risk Brain's inputs, computes off the event loop, and keeps the latest assessment.

Recomputed on every TradeClosed (coalesced: events arriving during a computation cause one more run,
not one each, so a burst of closes never queues a burst of Monte Carlo runs) and on a timer.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.bus import Event
from app.core.clock import HOUR_MS
from app.core.db import database_failure
from app.core.errors import ServiceUnavailable
from app.domains.markets.marketdata import MarketData
from app.domains.riskbrain import repository
from app.domains.riskbrain.metrics import (
    Assessment,
    MarketRisk,
    Position,
    RiskBrainConfig,
    assess,
    book_market_risk,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StampedAssessment:
    assessment: Assessment
    market: MarketRisk
    computed_at: datetime
    trigger: str
    config: RiskBrainConfig


class RiskBrain:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        account_id: str,
        config: RiskBrainConfig,
        clock: Callable[[], datetime],
        market_data: MarketData | None = None,
    ) -> None:
        self._sessions = sessions
        self._account_id = account_id
        self.config = config
        self._clock = clock
        self._market_data = market_data
        self._latest: StampedAssessment | None = None
        self._lock = asyncio.Lock()
        self._dirty = False
        self._last_run: float | None = None  # time.monotonic() of the last run
        self._timer: asyncio.Task[None] | None = None
        self.runs = 0

    @property
    def latest(self) -> StampedAssessment | None:
        return self._latest

    async def current(self) -> StampedAssessment:
        """The latest assessment; the first request computes one."""
        return self._latest or await self.refresh("request")

    async def refresh(self, trigger: str, *, settle: bool = False) -> StampedAssessment:
        """Recompute from data read after this call; concurrent callers share one later run.
        `settle` (events) first waits until `event_gap_seconds` have passed since the last run."""
        self._dirty = True
        async with self._lock:
            if not self._dirty and self._latest is not None:
                return self._latest  # a run that started after our request already covered it
            if settle and self._last_run is not None:
                wait = self._last_run + self.config.event_gap_seconds - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._dirty = False
            try:
                curve, equity, positions = await self._inputs()
                assessment = await self._compute(curve, equity, positions)
                market = await self._market(positions, equity)
            except BaseException:
                self._dirty = True  # callers waiting on this run must try their own
                raise
            self._latest = StampedAssessment(assessment, market, self._clock(), trigger, self.config)
            self._last_run = time.monotonic()
            self.runs += 1
            return self._latest

    async def on_trade_closed(self, _: Event) -> None:
        await self.refresh("trade_closed", settle=True)

    async def _inputs(self) -> tuple[list[Decimal], Decimal, list[Position]]:
        async with self._sessions() as session:
            equity = await repository.account_equity(session, self._account_id)
            if equity is None:
                raise ServiceUnavailable(f"account {self._account_id!r} is not initialised")
            curve = await repository.equity_curve(session, self._account_id, self.config.window + 1)
            positions = await repository.open_positions(session, self._account_id)
        return curve, equity, positions

    async def _compute(self, curve: list[Decimal], equity: Decimal, positions: list[Position]) -> Assessment:
        """Monte Carlo and sorting take milliseconds: in a thread, unless the series is tiny or too short."""
        values = np.array([float(e) for e in curve], dtype=np.float64)
        returns = max(values.size - 1, 0)
        if returns < self.config.min_samples or returns <= self.config.inline_max_returns:
            return assess(values, equity, positions, self.config)
        return await asyncio.to_thread(assess, values, equity, positions, self.config)

    async def _market(self, positions: list[Position], equity: Decimal) -> MarketRisk:
        """The book against the held symbols' recent hourly candles; any failure leaves only this part empty."""
        net: dict[str, float] = {}
        for p in positions:
            net[p.symbol] = net.get(p.symbol, 0.0) + float(p.notional if p.side == "LONG" else -p.notional)
        if not net:
            return MarketRisk("no_positions", "no open positions")
        if self._market_data is None:
            return MarketRisk("unavailable", "no market data source")
        end_ms = int(self._clock().timestamp() * 1000)
        start_ms = end_ms - (self.config.market_window_hours + 1) * HOUR_MS
        series = {}
        for symbol in sorted(net):
            try:
                candles = await self._market_data.candles(symbol, "1h", start_ms, end_ms)
            except Exception as exc:  # noqa: BLE001 - an optional input: its failure must not stop the rest
                logger.info("riskbrain_market_data_unavailable", extra={"symbol": symbol, "error": str(exc)[:300]})
                return MarketRisk("unavailable", f"no market data for {symbol}: {type(exc).__name__}")
            series[symbol] = (candles.timestamp, candles.close)
        return await asyncio.to_thread(book_market_risk, series, net, float(equity), self.config.min_samples)

    # --- the timer ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._timer is None and self.config.interval_seconds > 0:
            self._timer = asyncio.create_task(self._tick(), name="riskbrain-timer")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None

    async def _tick(self) -> None:
        failing: str | None = None
        while True:
            await asyncio.sleep(self.config.interval_seconds)
            try:
                await self.refresh("timer")
                failing = None
            except Exception as exc:
                cause = database_failure(exc) or type(exc).__name__
                if cause != failing:  # logged once per cause, not on every tick
                    logger.warning("riskbrain_refresh_failed", extra={"error_class": cause}, exc_info=exc)
                failing = cause
