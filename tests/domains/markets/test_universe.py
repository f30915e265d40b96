"""Universe ranking: every tradable symbol with data scored, the top N picked, exclusions explained, no look-ahead."""

import logging
import math
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from app.domains.markets.candles import Candles, Funding
from app.domains.markets.catalog import Market, MarketCatalog
from app.domains.markets.marketdata import ReplayMarketData, UnknownMarketData, default_data_root
from app.domains.markets.universe import (
    NO_MARKET_DATA,
    NOT_TRADABLE,
    SymbolScore,
    build_ranking,
    offered_symbols,
    rank_universe,
    top,
)

HOUR = 3_600_000
CATALOG = MarketCatalog.load()
# The bundled data has candles for these 7 perpetuals; the catalog trades ADA, BTC, DOGE, ETH, LTC, TRX and XRP.
PERPETUALS = {f"{base}/USDT:USDT" for base in ("ADA", "BNB", "BTC", "DOGE", "ETH", "SOL", "XRP")}
OFFERED = {f"{base}/USDT:USDT" for base in ("ADA", "BTC", "DOGE", "ETH", "XRP")}
UNOFFERED = {
    "BNB/USDT:USDT": NOT_TRADABLE,
    "SOL/USDT:USDT": NOT_TRADABLE,
    "LTC/USDT:USDT": NO_MARKET_DATA,
    "TRX/USDT:USDT": NO_MARKET_DATA,
}


def catalog_of(*symbols: str) -> MarketCatalog:
    """A catalog trading exactly `symbols` (the exchange rules do not matter to the ranking)."""
    one = Decimal("0.001")
    return MarketCatalog(
        [Market(s, s.split(":")[0].replace("/", ""), one, one, one, Decimal(5), one, one) for s in symbols]
    )


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


class FakeMarket:
    """Candles from memory; `honor_range=False` hands out everything, like a provider that over-fetches."""

    name = "fake"

    def __init__(self, candles: dict[str, Candles], *, honor_range: bool = True, broken: str | None = None) -> None:
        self.series = candles
        self.honor_range = honor_range
        self.broken = broken
        self.read: set[str] = set()

    def symbols(self) -> list[str]:
        return sorted([*self.series, *([self.broken] if self.broken else [])])

    async def candles(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> Candles:
        self.read.add(symbol)
        if symbol == self.broken or symbol not in self.series:
            raise UnknownMarketData(f"no candles for {symbol}")
        series = self.series[symbol]
        if not self.honor_range:
            return series
        ts = series.timestamp
        first = 0 if start_ms is None else int(np.searchsorted(ts, start_ms, "left"))
        stop = len(ts) if end_ms is None else int(np.searchsorted(ts, end_ms, "left"))
        return series.slice(first, max(first, stop))

    async def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> Funding:
        raise UnknownMarketData("no funding in this fake")


def synthetic(symbol: str, start_ms: int, hours: int, seed: int, volume: float = 1000.0) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, hours)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return Candles(
        symbol,
        "1h",
        start_ms + HOUR * np.arange(hours, dtype=np.int64),
        open_,
        np.maximum(open_, close) * 1.001,
        np.minimum(open_, close) * 0.999,
        close,
        rng.uniform(0.5, 1.5, hours) * volume,
    )


def altered_after(candles: Candles, from_ms: int) -> Candles:
    """The same candles, with every one opened at or after `from_ms` replaced by a wild move and volume."""
    later = candles.timestamp >= from_ms
    scale = np.where(later, 3.0, 1.0)
    return Candles(
        candles.symbol,
        candles.timeframe,
        candles.timestamp,
        candles.open * scale,
        candles.high * scale,
        candles.low * scale,
        candles.close * scale,
        np.where(later, candles.volume * 50.0, candles.volume),
    )


@pytest.fixture(scope="module")
def market() -> ReplayMarketData:
    root = default_data_root()
    if not (root / "BTC_USDT_USDT-1h-futures.csv.gz").is_file():
        pytest.skip(f"!!! market data missing under {root} (expected ../shared beside the repository)")
    return ReplayMarketData(root, cache_size=8)


async def test_ranks_every_tradable_bundled_perpetual(market: ReplayMarketData) -> None:
    assert set(market.symbols()) == PERPETUALS  # the data; OFFERED is the part the catalog can trade
    scores = await rank_universe(market, ms("2024-06-01"), top_n=3, catalog=CATALOG)
    assert {s.symbol for s in scores} == OFFERED and len(scores) == 5
    assert [s.score for s in scores] == sorted((s.score for s in scores), reverse=True)
    for s in scores:
        assert s.candles == 720 and s.liquidity > 0 and s.volatility > 0 and s.trend >= 0
        assert math.isfinite(s.score)
    best = top(scores, 3)
    assert len(best) == 3 and best == scores[:3]
    ranking = await build_ranking(market, ms("2024-06-01"), top_n=3, catalog=CATALOG)
    assert ranking.selected == tuple(s.symbol for s in best)
    assert {e.symbol: e.reason for e in ranking.excluded} == UNOFFERED
    assert ranking.as_of_ms == ms("2024-06-01")
    # BTC and ETH are by far the most liquid perpetuals
    by_liquidity = sorted(scores, key=lambda s: s.liquidity, reverse=True)
    assert {s.symbol for s in by_liquidity[:2]} == {"BTC/USDT:USDT", "ETH/USDT:USDT"}


async def test_symbols_without_enough_history_are_excluded_with_a_reason(
    market: ReplayMarketData, caplog: pytest.LogCaptureFixture
) -> None:
    # DOGE lists on 2020-07-10: it has no 30 days of candles by 2020-08-01 (SOL, listed on 2020-09-14, is not
    # tradable here anyway: no exchange metadata).
    with caplog.at_level(logging.INFO, logger="app.domains.markets.universe"):
        ranking = await build_ranking(market, ms("2020-08-01"), top_n=3, catalog=CATALOG)
    excluded = {e.symbol: e.reason for e in ranking.excluded}
    assert set(excluded) == {"DOGE/USDT:USDT", *UNOFFERED}
    assert "of 720 candles" in excluded["DOGE/USDT:USDT"]
    assert {s: excluded[s] for s in UNOFFERED} == UNOFFERED
    assert [e.symbol for e in ranking.excluded] == sorted(excluded)
    assert {s.symbol for s in ranking.scores} == OFFERED - set(excluded)
    logged = {
        r.__dict__["symbol"]: r.__dict__["reason"]
        for r in caplog.records
        if r.getMessage() == "universe_symbol_excluded"
    }
    assert logged == excluded
    assert len(await rank_universe(market, ms("2020-08-01"), top_n=3, catalog=CATALOG)) == 4


async def test_only_tradable_symbols_with_data_are_offered_and_the_rest_say_why() -> None:
    start = ms("2024-01-01")
    series = {s: synthetic(s, start, 1000, seed=i) for i, s in enumerate(("A/USDT:USDT", "B/USDT:USDT", "X/USDT:USDT"))}
    series["NEW/USDT:USDT"] = synthetic("NEW/USDT:USDT", start + 1000 * HOUR, 10, seed=9)  # lists after as_of
    fake = FakeMarket(series)
    catalog = catalog_of("A/USDT:USDT", "B/USDT:USDT", "NEW/USDT:USDT", "Z/USDT:USDT")
    ranking = await build_ranking(fake, start + 1000 * HOUR, top_n=5, catalog=catalog)
    assert {s.symbol for s in ranking.scores} == {"A/USDT:USDT", "B/USDT:USDT"}
    assert ranking.selected == tuple(s.symbol for s in ranking.scores)
    reasons = {e.symbol: e.reason for e in ranking.excluded}
    assert reasons.keys() == {"NEW/USDT:USDT", "X/USDT:USDT", "Z/USDT:USDT"}
    assert (reasons["X/USDT:USDT"], reasons["Z/USDT:USDT"]) == (NOT_TRADABLE, NO_MARKET_DATA)
    assert reasons["NEW/USDT:USDT"].startswith("no closed 1h candles")
    assert "X/USDT:USDT" not in fake.read and "Z/USDT:USDT" not in fake.read  # neither is ever measured
    offered, excluded = offered_symbols(fake.symbols(), catalog)
    assert offered == ["A/USDT:USDT", "B/USDT:USDT", "NEW/USDT:USDT"]
    assert [(e.symbol, e.reason) for e in excluded] == [("X/USDT:USDT", NOT_TRADABLE), ("Z/USDT:USDT", NO_MARKET_DATA)]


async def test_no_look_ahead() -> None:
    start = ms("2024-01-01")
    series = {f"S{i}/USDT:USDT": synthetic(f"S{i}/USDT:USDT", start, 2000, seed=i, volume=10.0**i) for i in range(5)}
    as_of = start + 1500 * HOUR + HOUR // 2  # mid-candle: the candle opened at as_of - 30 min is still forming
    before = await rank_universe(FakeMarket(series), as_of, top_n=2, catalog=catalog_of(*series))
    unfinished = as_of - HOUR + 1  # candles opened from here on had not closed by as_of
    changed = {s: altered_after(c, unfinished) for s, c in series.items()}
    assert await rank_universe(FakeMarket(changed), as_of, top_n=2, catalog=catalog_of(*series)) == before
    # a provider that ignores the requested range must not leak the future in either
    assert (
        await rank_universe(FakeMarket(changed, honor_range=False), as_of, top_n=2, catalog=catalog_of(*series))
        == before
    )
    # and the test can tell: changing the last candle that had closed does change the scores
    closed = {s: altered_after(c, unfinished - HOUR) for s, c in series.items()}
    assert await rank_universe(FakeMarket(closed), as_of, top_n=2, catalog=catalog_of(*series)) != before


async def test_score_parts_are_computed_as_documented() -> None:
    start = ms("2024-01-01")
    series = {f"S{i}/USDT:USDT": synthetic(f"S{i}/USDT:USDT", start, 1000, seed=10 + i) for i in range(3)}
    as_of = start + 900 * HOUR
    scores = {
        s.symbol: s
        for s in await rank_universe(
            FakeMarket(series), as_of, top_n=1, lookback_hours=500, catalog=catalog_of(*series)
        )
    }
    window = series["S0/USDT:USDT"].slice(400, 900)  # the 500 candles that closed by as_of
    log_close = np.log(window.close)
    volatility = float(np.diff(log_close).std())
    s0 = scores["S0/USDT:USDT"]
    assert s0.candles == 500
    assert s0.volatility == pytest.approx(volatility)
    assert s0.liquidity == pytest.approx(float(np.median(window.volume * window.close)))
    assert s0.trend == pytest.approx(abs(log_close[-1] - log_close[-73]) / (volatility * math.sqrt(72)))
    liquidity = np.log([scores[s].liquidity for s in sorted(scores)])
    trend = np.array([scores[s].trend for s in sorted(scores)])
    log_vol = np.log([scores[s].volatility for s in sorted(scores)])
    z = [(v - v.mean()) / v.std() for v in (liquidity, trend, log_vol)]
    expected = z[0] + z[1] - np.maximum(0.0, z[2] - 1.0)
    np.testing.assert_allclose([scores[s].score for s in sorted(scores)], expected)


async def test_unreadable_and_stale_symbols_are_excluded_not_fatal() -> None:
    start = ms("2024-01-01")
    series = {
        "LIVE/USDT:USDT": synthetic("LIVE/USDT:USDT", start, 1000, seed=1),
        "GONE/USDT:USDT": synthetic("GONE/USDT:USDT", start, 990, seed=2),  # stopped 10 h before as_of
        "OTHER/USDT:USDT": synthetic("OTHER/USDT:USDT", start, 1000, seed=3),
    }
    ranking = await build_ranking(
        FakeMarket(series, broken="BROKEN/USDT:USDT"),
        start + 1000 * HOUR,
        top_n=5,
        catalog=catalog_of(*series, "BROKEN/USDT:USDT"),
    )
    reasons = {e.symbol: e.reason for e in ranking.excluded}
    assert set(reasons) == {"BROKEN/USDT:USDT", "GONE/USDT:USDT"}
    assert reasons["BROKEN/USDT:USDT"].startswith("market data unavailable")
    assert reasons["GONE/USDT:USDT"].startswith("stale")
    assert ranking.selected == tuple(s.symbol for s in ranking.scores) and len(ranking.selected) == 2


async def test_as_of_none_ranks_at_the_newest_close() -> None:
    start = ms("2024-01-01")
    series = {f"S{i}/USDT:USDT": synthetic(f"S{i}/USDT:USDT", start, 1000 + i, seed=i) for i in range(3)}
    ranking = await build_ranking(FakeMarket(series), None, top_n=1, catalog=catalog_of(*series))
    assert ranking.as_of_ms == start + 1002 * HOUR  # S2's last candle opens at 1001 h and closes an hour later
    assert ranking.scores == tuple(
        await rank_universe(FakeMarket(series), start + 1002 * HOUR, top_n=1, catalog=catalog_of(*series))
    )


async def test_a_single_symbol_scores_zero() -> None:
    series = {"ONE/USDT:USDT": synthetic("ONE/USDT:USDT", ms("2024-01-01"), 800, seed=4)}
    (only,) = await rank_universe(FakeMarket(series), None, top_n=1, catalog=catalog_of(*series))
    assert only.score == 0.0 and only.symbol == "ONE/USDT:USDT"


def test_top() -> None:
    scores = [SymbolScore(s, v, 1.0, 1.0, 0.01, 720) for s, v in (("A", 0.5), ("B", 2.0), ("C", -1.0), ("D", 2.0))]
    assert [s.symbol for s in top(scores, 3)] == ["B", "D", "A"]
    assert len(top(scores, 10)) == 4 and top(scores, 0) == []
    with pytest.raises(ValueError):
        top(scores, -1)


async def test_bad_arguments() -> None:
    market = FakeMarket({})
    with pytest.raises(ValueError):
        await rank_universe(market, None, top_n=-1, catalog=CATALOG)
    with pytest.raises(ValueError):
        await rank_universe(market, None, top_n=3, lookback_hours=72, catalog=CATALOG)
