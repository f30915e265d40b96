"""Price feeds shared by the paper exchange and the position monitor.

`ReplayPriceFeed` (the embedded default) replays the bundled hourly candles on a simulated clock:
simulated time = `start` + (seconds since the feed started) × `speed`. As of a simulated time t it
knows only the candles closed by t: the price is the close of the last one (no look-ahead), and the
monitor receives each candle once it has closed, with the funding rate settled at its open.

`LivePriceFeed` (EXCHANGE=binance) takes the exchange's mark price now and its closed candles.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from app.core.clock import HOUR_MS
from app.domains.execution.exchange import ExchangeError
from app.domains.execution.paper import Bar
from app.domains.markets.marketdata import MarketData, MarketDataError


class NoPrice(LookupError):
    """The feed has no closed candle for the symbol at this time."""


class PriceFeed(Protocol):
    name: str

    def now(self) -> datetime: ...

    async def price(self, symbol: str) -> Decimal: ...

    async def closed_bars(self, symbol: str, after_open_ms: int | None) -> list[Bar]: ...

    async def funding_rate(self, symbol: str, open_ms: int) -> Decimal | None: ...


class MarkSource(Protocol):
    name: str

    async def fetch_mark_price(self, symbol: str) -> Decimal: ...


def _decimal(value: float) -> Decimal:
    return Decimal(repr(float(value)))


class ReplayPriceFeed:
    name = "replay"

    def __init__(
        self,
        market_data: MarketData,
        start: datetime,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self._data = market_data
        self.start = start.astimezone(UTC)
        self.speed = speed
        self._monotonic = monotonic
        self._started = monotonic()

    def now(self) -> datetime:
        elapsed = (self._monotonic() - self._started) * self.speed
        return datetime.fromtimestamp(self.start.timestamp() + elapsed, tz=UTC)

    def _now_ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    async def price(self, symbol: str) -> Decimal:
        """The close of the last candle closed by now."""
        now_ms = self._now_ms()
        try:
            candles = await self._data.candles(symbol, "1h", now_ms - 48 * HOUR_MS, now_ms - HOUR_MS + 1)
        except MarketDataError as exc:
            raise NoPrice(f"no candles of {symbol}: {exc}") from exc
        if len(candles) == 0:
            raise NoPrice(f"no closed 1h candle of {symbol} in the 48 h before {self.now().isoformat()}")
        return _decimal(candles.close[-1])

    async def closed_bars(self, symbol: str, after_open_ms: int | None) -> list[Bar]:
        """Candles closed by now whose open is after `after_open_ms` (None: only the last closed one)."""
        now_ms = self._now_ms()
        last_open_allowed = now_ms - HOUR_MS  # a candle opening then closes exactly now
        start = after_open_ms + 1 if after_open_ms is not None else last_open_allowed - HOUR_MS + 1
        if start > last_open_allowed:
            return []  # nothing closed since (e.g. a replay restarted earlier than where it stopped)
        try:
            candles = await self._data.candles(symbol, "1h", start, last_open_allowed + 1)
        except MarketDataError as exc:
            raise NoPrice(f"no candles of {symbol}: {exc}") from exc
        return [
            Bar(
                symbol,
                int(candles.timestamp[i]),
                _decimal(candles.open[i]),
                _decimal(candles.high[i]),
                _decimal(candles.low[i]),
                _decimal(candles.close[i]),
            )
            for i in range(len(candles))
        ]

    async def funding_rate(self, symbol: str, open_ms: int) -> Decimal | None:
        """The rate settled during the hour opening at `open_ms` (Binance settles on the hour), or None."""
        try:
            funding = await self._data.funding(symbol, open_ms, open_ms + HOUR_MS)
        except MarketDataError:
            return None  # no funding data: none settled (said by the position's events having none)
        return _decimal(funding.rate[0]) if len(funding) else None


class LivePriceFeed:
    """Live: the exchange's mark price now, and closed 1h candles (for the monitor and the ATR) from the
    same exchange through `CcxtMarketData`, on the wall clock. Funding is settled by the exchange itself,
    so the live venue does not apply rates from here."""

    def __init__(self, marks: MarkSource, market_data: MarketData, clock: Callable[[], datetime]) -> None:
        self._marks = marks
        self.name = f"live:{marks.name}"
        self._clock = clock
        self._bars = ReplayPriceFeed(market_data, clock(), 1.0, monotonic=self._seconds)

    def _seconds(self) -> float:
        return self._clock().timestamp()

    def now(self) -> datetime:
        return self._clock()

    async def price(self, symbol: str) -> Decimal:
        try:
            return await self._marks.fetch_mark_price(symbol)
        except ExchangeError as exc:
            raise NoPrice(f"no mark price of {symbol} from {self._marks.name}: {exc}") from exc

    async def closed_bars(self, symbol: str, after_open_ms: int | None) -> list[Bar]:
        return await self._bars.closed_bars(symbol, after_open_ms)

    async def funding_rate(self, symbol: str, open_ms: int) -> Decimal | None:
        return await self._bars.funding_rate(symbol, open_ms)
