"""Which symbols to trade: every tradable symbol with data is scored on liquidity and trend, the best N picked.

Only symbols that POST /trades can open (in the market catalog) and that have market data are offered, here
and by the signal service (`offered_symbols`): a ranked symbol the trades path refuses, or a tradable one
with no signal, would mislead the operator. The others are listed as excluded with the reason.

Scores use only candles that had closed by `as_of` (open time + timeframe ≤ as_of), so a ranking as of a
past time is exactly what could have been computed then. Symbols that cannot be scored are not silently
dropped: each comes back with the reason, and is logged as `universe_symbol_excluded`.
"""

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.core.clock import HOUR_MS
from app.core.errors import ServiceUnavailable
from app.domains.markets.candles import TIMEFRAME_MS, Candles, FloatArray
from app.domains.markets.catalog import MarketCatalog
from app.domains.markets.marketdata import MarketData, MarketDataError

logger = logging.getLogger(__name__)

TREND_HOURS = 72
MIN_COVERAGE = 0.9  # share of the lookback's candles a symbol needs: fewer means new, halted or delisted
MAX_STALE_CANDLES = 3  # a last candle older than this (in candles before as_of) means the symbol stopped trading
VOLATILITY_PENALTY_FREE_Z = 1.0
_CONCURRENCY = 4
NOT_TRADABLE = "no exchange metadata: not tradable here"
NO_MARKET_DATA = "no market data for signals"


@dataclass(frozen=True)
class SymbolScore:
    """One symbol's score and its parts.

    liquidity: median hourly quote volume (volume × close, USDT) over the lookback; trend: |72 h log return|
    over the volatility expected in 72 h (realized vol × sqrt(72)), a t-statistic of the move; volatility:
    standard deviation of 1 h log returns over the lookback; candles: how many the score used.
    """

    symbol: str
    score: float
    liquidity: float
    trend: float
    volatility: float
    candles: int


@dataclass(frozen=True)
class Exclusion:
    symbol: str
    reason: str


def offered_symbols(with_data: Sequence[str], catalog: MarketCatalog) -> tuple[list[str], list[Exclusion]]:
    """The symbols with market data that the catalog can trade, and every other one of either list with why."""
    data, tradable = set(with_data), set(catalog.symbols())
    excluded = [Exclusion(s, NOT_TRADABLE) for s in data - tradable]
    excluded += [Exclusion(s, NO_MARKET_DATA) for s in tradable - data]
    return sorted(data & tradable), sorted(excluded, key=lambda e: e.symbol)


@dataclass(frozen=True)
class UniverseRanking:
    """All scored symbols best first, the top `top_n` of them, and every symbol left out with why."""

    as_of_ms: int
    scores: tuple[SymbolScore, ...]
    selected: tuple[str, ...]
    excluded: tuple[Exclusion, ...]


def top(scores: Sequence[SymbolScore], n: int) -> list[SymbolScore]:
    """The `n` best of `scores` (all of them when there are fewer)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return sorted(scores, key=_order)[:n]


def _order(score: SymbolScore) -> tuple[float, str]:
    return (-score.score, score.symbol)  # ties broken by symbol, so a ranking is reproducible


def _zscore(values: FloatArray) -> FloatArray:
    """Cross-sectional z-scores; all zeros when the symbols do not differ (or there is only one)."""
    std = float(values.std())
    if values.size < 2 or std <= 1e-12:
        return np.zeros(values.shape, dtype=np.float64)
    out: FloatArray = (values - values.mean()) / std
    return out


@dataclass(frozen=True)
class _Raw:
    symbol: str
    liquidity: float
    trend: float
    volatility: float
    candles: int


def _measure(candles: Candles, as_of_ms: int, lookback_hours: int) -> _Raw | str:
    """The raw measures of one symbol, or why it cannot be scored."""
    step_ms = TIMEFRAME_MS[candles.timeframe]
    expected = lookback_hours * HOUR_MS // step_ms
    trend_candles = TREND_HOURS * HOUR_MS // step_ms
    n = len(candles)
    if n == 0:
        return f"no closed {candles.timeframe} candles in the {lookback_hours} h before as_of"
    if n < MIN_COVERAGE * expected:
        return f"only {n} of {expected} candles in the {lookback_hours} h lookback (need {MIN_COVERAGE:.0%})"
    last_close = int(candles.timestamp[-1]) + step_ms
    if as_of_ms - last_close > MAX_STALE_CANDLES * step_ms:
        return f"stale: last candle closed {(as_of_ms - last_close) // 60_000} min before as_of"
    log_close = np.log(candles.close)
    volatility = float(np.diff(log_close).std())
    liquidity = float(np.median(candles.volume * candles.close))
    if liquidity <= 0:
        return "no traded volume in the lookback"
    if volatility <= 0:
        return "price did not move in the lookback"
    # The close 72 h before the last one, or the nearest earlier one across a gap.
    before = int(np.searchsorted(candles.timestamp, candles.timestamp[-1] - trend_candles * step_ms, "right")) - 1
    if before < 0:
        return f"less than {TREND_HOURS} h of candles for the trend"
    move = abs(float(log_close[-1] - log_close[before]))
    trend = move / (volatility * math.sqrt(trend_candles))
    return _Raw(candles.symbol, liquidity, trend, volatility, n)


def _score(raw: Sequence[_Raw]) -> list[SymbolScore]:
    """Score = z(log liquidity) + z(trend) - max(0, z(log volatility) - 1), best first.

    Liquidity is compared in logs because volumes span orders of magnitude. Trend is already scaled by each
    symbol's own volatility, so ordinary volatility costs nothing; only a symbol more than one cross-sectional
    standard deviation (of log volatility) above the universe's mean loses the excess, one point per σ:
    such moves are hard to size and to stop out of cleanly.
    """
    if not raw:
        return []
    liquidity = np.array([r.liquidity for r in raw])
    trend = np.array([r.trend for r in raw])
    volatility = np.array([r.volatility for r in raw])
    penalty = np.maximum(0.0, _zscore(np.log(volatility)) - VOLATILITY_PENALTY_FREE_Z)
    score = _zscore(np.log(liquidity)) + _zscore(trend) - penalty
    scored = [
        SymbolScore(r.symbol, float(s), r.liquidity, r.trend, r.volatility, r.candles)
        for r, s in zip(raw, score, strict=True)
    ]
    return sorted(scored, key=_order)


def symbols_with_data(market: MarketData) -> list[str]:
    """The symbols `market` has data for; a provider that cannot list them is a 503, not a 500.

    The cause (a path, a host) goes to the log, not to the caller.
    """
    try:
        return market.symbols()
    except MarketDataError as exc:
        logger.error("market_data_unavailable", extra={"error": str(exc)[:300]})
        raise ServiceUnavailable("market data unavailable: no symbol can be scored (see the service log)") from exc


async def _latest_close(market: MarketData, symbols: Sequence[str], timeframe: str) -> int:
    """The newest close time any symbol has: the `as_of` of a ranking asked for 'now'."""
    latest = 0
    for symbol in symbols:
        try:
            candles = await market.candles(symbol, timeframe)
        except MarketDataError:
            continue
        if len(candles):
            latest = max(latest, int(candles.timestamp[-1]) + TIMEFRAME_MS[timeframe])
    return latest


async def build_ranking(
    market: MarketData,
    as_of_ms: int | None,
    top_n: int,
    lookback_hours: int = 720,
    timeframe: str = "1h",
    *,
    catalog: MarketCatalog,
) -> UniverseRanking:
    """Score every offered symbol as of `as_of_ms` (None: the newest closed candle of any of them).

    Offered: in `market.symbols()` and in `catalog` (see `offered_symbols`). A symbol whose data cannot be
    read is excluded with the error, not fatal to the ranking.
    """
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    if timeframe not in TIMEFRAME_MS:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    step_ms = TIMEFRAME_MS[timeframe]
    if lookback_hours * HOUR_MS // step_ms <= TREND_HOURS * HOUR_MS // step_ms:
        raise ValueError(f"lookback_hours must exceed the {TREND_HOURS} h trend window, got {lookback_hours}")
    symbols, unoffered = offered_symbols(symbols_with_data(market), catalog)
    as_of = as_of_ms if as_of_ms is not None else await _latest_close(market, symbols, timeframe)
    # Open times in [start, stop) are exactly the candles of the lookback that had closed by as_of.
    stop = as_of - step_ms + 1
    start = stop - lookback_hours * HOUR_MS
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def measure(symbol: str) -> _Raw | str:
        async with limit:
            try:
                candles = await market.candles(symbol, timeframe, start, stop)
            except MarketDataError as exc:
                return f"market data unavailable: {exc}"
        # A provider returning more than asked must still not leak the future (or the distant past) in.
        ts = candles.timestamp
        return _measure(
            candles.slice(int(np.searchsorted(ts, start, "left")), int(np.searchsorted(ts, stop, "left"))),
            as_of,
            lookback_hours,
        )

    results = await asyncio.gather(*(measure(symbol) for symbol in symbols))
    raw = [r for r in results if isinstance(r, _Raw)]
    unscored = [Exclusion(s, r) for s, r in zip(symbols, results, strict=True) if isinstance(r, str)]
    excluded = tuple(sorted([*unoffered, *unscored], key=lambda e: e.symbol))
    for exclusion in excluded:
        logger.info(
            "universe_symbol_excluded",
            extra={"symbol": exclusion.symbol, "reason": exclusion.reason, "as_of_ms": as_of},
        )
    scores = tuple(_score(raw))
    selected = tuple(s.symbol for s in top(scores, top_n))
    logger.info("universe_ranked", extra={"as_of_ms": as_of, "selected": list(selected), "scored": len(scores)})
    return UniverseRanking(as_of, scores, selected, excluded)


async def rank_universe(
    market: MarketData, as_of_ms: int | None, top_n: int, lookback_hours: int = 720, *, catalog: MarketCatalog
) -> list[SymbolScore]:
    """All scorable offered symbols, best first (the first `top_n` are the selection); exclusions are logged.

    `build_ranking` returns the same scores together with the selection and the excluded symbols' reasons.
    """
    ranking = await build_ranking(market, as_of_ms, top_n, lookback_hours, catalog=catalog)
    return list(ranking.scores)
