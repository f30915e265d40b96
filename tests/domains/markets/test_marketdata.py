"""Market data providers: replay of the bundled files, live data through ccxt (faked), validation and gaps.

No test touches the network: the ccxt provider only ever sees the fake exchanges below, and sockets are
blocked for the whole module.
"""

import asyncio
import gzip
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pytest

from app.domains.markets.candles import Candles, Funding
from app.domains.markets.marketdata import (
    CandleValidationError,
    CcxtMarketData,
    Gap,
    MarketData,
    MarketDataError,
    ReplayMarketData,
    UnknownMarketData,
    default_data_root,
    find_gaps,
    validate_candles,
    validate_funding,
)

HOUR = 3_600_000
BUNDLED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "market" / "long"
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


def ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a market data test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def data_root() -> Path:
    if not (BUNDLED / "BTC_USDT_USDT-1h-futures.csv.gz").is_file():
        pytest.skip(f"!!! bundled market data missing at {BUNDLED} (expected ../shared beside the repo); NOT TESTED")
    return BUNDLED


@pytest.fixture(scope="module")
def replay(data_root: Path) -> ReplayMarketData:
    return ReplayMarketData(data_root)


def assert_same_candles(a: Candles, b: Candles) -> None:
    assert (a.symbol, a.timeframe) == (b.symbol, b.timeframe)
    for column in ("timestamp", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))


# --- replay: the bundled files match the README -----------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "rows", "first", "last"),
    [
        (BTC, 53_887, "2019-09-08 17:00", "2025-10-31 23:00"),
        (ETH, 51_977, "2019-11-27 07:00", "2025-10-31 23:00"),
    ],
)
async def test_futures_candles_match_the_readme(
    replay: ReplayMarketData, symbol: str, rows: int, first: str, last: str
) -> None:
    candles = await replay.candles(symbol, "1h")
    assert (candles.symbol, candles.timeframe, len(candles)) == (symbol, "1h", rows)
    assert int(candles.timestamp[0]) == ms(first)
    assert int(candles.timestamp[-1]) == ms(last)
    assert candles.timestamp.dtype == np.int64
    assert candles.close.dtype == np.float64
    assert find_gaps(candles) == []


async def test_columns_are_in_the_right_order(replay: ReplayMarketData) -> None:
    """README plausibility figures: 1h close at 00:00 UTC on 1 January."""
    btc = await replay.candles(BTC, "1h")
    for day, close in [("2020-01-01 00:00", 7171.55), ("2023-01-01 00:00", 16527.0), ("2025-01-01 00:00", 94363.6)]:
        row = int(np.searchsorted(btc.timestamp, ms(day)))
        assert btc.close[row] == close
    listing = btc.slice(0, 2)
    assert list(listing.open) == list(listing.close) == [10000.0, 10000.0]


@pytest.mark.parametrize(
    ("symbol", "rows", "first", "last"),
    [
        (BTC, 6_731, "2019-09-10 08:00", "2025-10-31 16:00"),
        (ETH, 6_497, "2019-11-27 08:00", "2025-10-31 16:00"),
    ],
)
async def test_funding_matches_the_readme(
    replay: ReplayMarketData, symbol: str, rows: int, first: str, last: str
) -> None:
    funding = await replay.funding(symbol)
    assert (funding.symbol, len(funding)) == (symbol, rows)
    assert (int(funding.timestamp[0]), int(funding.timestamp[-1])) == (ms(first), ms(last))
    assert set(np.diff(funding.timestamp).tolist()) == {8 * HOUR}
    assert np.all(np.abs(funding.rate) < 0.01)


def test_symbols_are_the_perpetuals_with_1h_futures_files(replay: ReplayMarketData) -> None:
    assert replay.symbols() == [
        "ADA/USDT:USDT",
        "BNB/USDT:USDT",
        BTC,
        "DOGE/USDT:USDT",
        ETH,
        "SOL/USDT:USDT",
        "XRP/USDT:USDT",
    ]


def test_spot_file_gaps_match_the_readme(data_root: Path) -> None:
    spot = ReplayMarketData.load_candles_file(data_root / "BTC_USDT-1h-spot.csv.gz", "BTC/USDT", "1h")
    assert len(spot) == 68_542
    gaps = find_gaps(spot)
    assert len(gaps) == 27
    assert sum(gap.missing for gap in gaps) == 122
    # The longest: the Binance spot outage of 2018-02-08/09.
    assert max(gaps, key=lambda gap: gap.missing) == Gap(ms("2018-02-08 00:00"), ms("2018-02-09 10:00"), 33)
    assert len(spot) + 122 == (int(spot.timestamp[-1]) - int(spot.timestamp[0])) // HOUR + 1


# --- replay: slicing, caching, errors ------------------------------------------------------------------


async def test_slice_is_start_inclusive_end_exclusive(replay: ReplayMarketData) -> None:
    day = await replay.candles(BTC, "1h", ms("2024-01-01 00:00"), ms("2024-01-02 00:00"))
    assert len(day) == 24
    assert int(day.timestamp[0]) == ms("2024-01-01 00:00")
    assert int(day.timestamp[-1]) == ms("2024-01-01 23:00")
    assert day.close[0] == 42503.5

    off_grid = await replay.candles(BTC, "1h", ms("2024-01-01 00:00") + 1, ms("2024-01-02 00:00") + 1)
    assert int(off_grid.timestamp[0]) == ms("2024-01-01 01:00")
    assert int(off_grid.timestamp[-1]) == ms("2024-01-02 00:00")


async def test_open_ended_slices(replay: ReplayMarketData) -> None:
    full = await replay.candles(BTC, "1h")
    head = await replay.candles(BTC, "1h", end_ms=ms("2019-09-09 00:00"))
    tail = await replay.candles(BTC, "1h", start_ms=ms("2025-10-31 00:00"))
    assert len(head) == 7  # 17:00 .. 23:00
    assert len(tail) == 24
    assert_same_candles(tail, full.slice(len(full) - 24, len(full)))
    assert len(await replay.candles(BTC, "1h", ms("2024-01-01 00:00"), ms("2024-01-01 00:00"))) == 0
    assert len(await replay.candles(BTC, "1h", ms("2030-01-01 00:00"))) == 0
    assert len(await replay.candles(BTC, "1h", end_ms=ms("2010-01-01 00:00"))) == 0
    with pytest.raises(ValueError, match="after end_ms"):
        await replay.candles(BTC, "1h", ms("2024-01-02 00:00"), ms("2024-01-01 00:00"))


async def test_funding_slice(replay: ReplayMarketData) -> None:
    funding = await replay.funding(BTC, ms("2024-01-01 00:00"), ms("2024-01-02 00:00"))
    assert funding.timestamp.tolist() == [ms("2024-01-01 00:00"), ms("2024-01-01 08:00"), ms("2024-01-01 16:00")]


async def test_cache_hit_returns_equal_data_without_reloading(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[tuple[str, str]] = []
    original = ReplayMarketData.load_candles_file

    def counting(path: Path, symbol: str, timeframe: str) -> Candles:
        loads.append((symbol, timeframe))
        return original(path, symbol, timeframe)

    monkeypatch.setattr(ReplayMarketData, "load_candles_file", staticmethod(counting))
    provider = ReplayMarketData(data_root)
    cold = await provider.candles(BTC, "1h")
    warm = await provider.candles(BTC, "1h")
    week = await provider.candles(BTC, "1h", ms("2024-01-01 00:00"), ms("2024-01-08 00:00"))
    assert loads == [(BTC, "1h")]
    assert_same_candles(cold, warm)
    assert len(week) == 7 * 24


async def test_lru_evicts_the_least_recently_used_series(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    original = ReplayMarketData.load_candles_file

    def counting(path: Path, symbol: str, timeframe: str) -> Candles:
        loads.append(symbol)
        return original(path, symbol, timeframe)

    monkeypatch.setattr(ReplayMarketData, "load_candles_file", staticmethod(counting))
    provider = ReplayMarketData(data_root, cache_size=1)
    for symbol in (BTC, BTC, ETH, BTC):
        await provider.candles(symbol, "1h")
    assert loads == [BTC, ETH, BTC]


async def test_concurrent_cold_requests_parse_the_file_once(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    original = ReplayMarketData.load_candles_file

    def counting(path: Path, symbol: str, timeframe: str) -> Candles:
        loads.append(symbol)
        return original(path, symbol, timeframe)

    monkeypatch.setattr(ReplayMarketData, "load_candles_file", staticmethod(counting))
    provider = ReplayMarketData(data_root)
    first, second = await asyncio.gather(provider.candles(ETH, "1h"), provider.candles(ETH, "1h"))
    assert loads == [ETH]
    assert_same_candles(first, second)


async def test_cached_arrays_are_read_only(replay: ReplayMarketData) -> None:
    candles = await replay.candles(BTC, "1h", ms("2024-01-01 00:00"), ms("2024-01-02 00:00"))
    with pytest.raises(ValueError, match="read-only"):
        candles.close[0] = 1.0
    funding = await replay.funding(BTC)
    with pytest.raises(ValueError, match="read-only"):
        funding.rate[0] = 1.0


async def test_cold_load_is_fast_and_does_not_block_the_event_loop(data_root: Path) -> None:
    provider = ReplayMarketData(data_root)
    started = time.perf_counter()
    load = asyncio.create_task(provider.candles(BTC, "1h"))
    ticks = 0
    while not load.done():
        ticks += 1
        await asyncio.sleep(0.001)
    cold = time.perf_counter() - started
    await load
    started = time.perf_counter()
    await provider.candles(BTC, "1h")
    warm = time.perf_counter() - started
    assert ticks >= 3, "the event loop was blocked while the file was parsed"
    assert cold < 1.0, f"cold load of 53,887 rows took {cold:.3f}s"
    assert warm < 0.01, f"cached load took {warm:.4f}s"


async def test_unknown_symbol_or_timeframe_is_unknown_market_data(replay: ReplayMarketData) -> None:
    with pytest.raises(UnknownMarketData, match="FOO/USDT:USDT"):
        await replay.candles("FOO/USDT:USDT", "1h")
    with pytest.raises(UnknownMarketData, match="funding"):
        await replay.funding("FOO/USDT:USDT")
    with pytest.raises(UnknownMarketData, match="4h"):
        await replay.candles(BTC, "4h")  # a known timeframe without a file
    with pytest.raises(UnknownMarketData, match="unknown timeframe"):
        await replay.candles(BTC, "3h")
    with pytest.raises(LookupError):
        await replay.candles("BTC/USDT", "1h")  # spot is not served by the provider


async def test_missing_directory_is_reported(tmp_path: Path) -> None:
    provider = ReplayMarketData(tmp_path / "nowhere")
    with pytest.raises(MarketDataError, match="MARKET_DATA_DIR"):
        provider.symbols()
    with pytest.raises(UnknownMarketData):
        await provider.candles(BTC, "1h")


def test_default_root_is_beside_the_repo_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKET_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_data_root() == BUNDLED
    monkeypatch.setenv("MARKET_DATA_DIR", str(tmp_path))
    assert default_data_root() == tmp_path
    assert ReplayMarketData().root == tmp_path


def test_providers_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(ReplayMarketData(tmp_path), MarketData)
    assert isinstance(CcxtMarketData(FakeExchange()), MarketData)


# --- loading arbitrary files ------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


HEADER = "timestamp,open,high,low,close,volume\n"


@pytest.mark.parametrize("name", ["candles.csv", "candles.csv.gz"])
def test_load_candles_file_plain_or_gzip(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, HEADER + f"{HOUR},10,11,9,10.5,3\n{2 * HOUR},10.5,12,10,11,0\n")
    candles = ReplayMarketData.load_candles_file(path, "X/USDT:USDT", "1h")
    assert candles.timestamp.tolist() == [HOUR, 2 * HOUR]
    assert candles.high.tolist() == [11.0, 12.0]
    assert candles.volume.tolist() == [3.0, 0.0]


def test_load_header_only_file_gives_empty_candles(tmp_path: Path) -> None:
    candles = ReplayMarketData.load_candles_file(write(tmp_path / "empty.csv", HEADER), "X/USDT:USDT", "1h")
    assert len(candles) == 0
    assert find_gaps(candles) == []


def test_load_rejects_a_wrong_header(tmp_path: Path) -> None:
    path = write(tmp_path / "funding.csv", "timestamp,funding_rate\n1,0.0001\n")
    with pytest.raises(MarketDataError, match="header"):
        ReplayMarketData.load_candles_file(path, "X/USDT:USDT", "1h")


def test_load_rejects_malformed_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", HEADER + f"{HOUR},10,11,9,10.5,3\n{2 * HOUR},10.5,oops,10,11,0\n")
    with pytest.raises(MarketDataError, match="unreadable"):
        ReplayMarketData.load_candles_file(path, "X/USDT:USDT", "1h")


def test_load_validates_the_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", HEADER + f"{HOUR},10,11,9,10.5,3\n{2 * HOUR},10.5,10,9,11,1\n")
    with pytest.raises(CandleValidationError, match=r"row 1 .*high >= max\(open, close\)"):
        ReplayMarketData.load_candles_file(path, "X/USDT:USDT", "1h")


def test_load_rejects_fractional_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", HEADER + "3600000.5,10,11,9,10.5,3\n")
    with pytest.raises(CandleValidationError, match="integers"):
        ReplayMarketData.load_candles_file(path, "X/USDT:USDT", "1h")


def test_load_funding_file(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv.gz", f"timestamp,funding_rate\n{8 * HOUR},0.0001\n{16 * HOUR},-0.00005\n")
    funding = ReplayMarketData.load_funding_file(path, "X/USDT:USDT")
    assert funding.timestamp.tolist() == [8 * HOUR, 16 * HOUR]
    assert funding.rate.tolist() == [0.0001, -0.00005]


# --- validation ------------------------------------------------------------------------------------

T0 = ms("2024-01-01 00:00")


def sample(rows: int = 5, **overrides: Any) -> Candles:
    open_ = 10.0 + np.arange(rows, dtype=np.float64)
    columns: dict[str, Any] = {
        "timestamp": T0 + HOUR * np.arange(rows, dtype=np.int64),
        "open": open_,
        "high": open_ + 1.0,
        "low": open_ - 1.0,
        "close": open_ + 0.5,
        "volume": np.arange(1, rows + 1, dtype=np.float64),
    }
    columns.update(overrides)
    return Candles("TEST/USDT:USDT", "1h", **columns)


def broken(column: str, row: int, value: float) -> Candles:
    valid = sample()
    columns = {name: getattr(valid, name).copy() for name in ("timestamp", "open", "high", "low", "close", "volume")}
    columns[column][row] = value
    return sample(**columns)


def test_valid_candles_pass() -> None:
    validate_candles(sample())
    validate_candles(sample(rows=0))
    validate_candles(sample(rows=1))


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("timestamp", T0 + 2 * HOUR, "timestamps strictly increasing"),  # duplicate of row 2
        ("timestamp", T0 + HOUR, "timestamps strictly increasing"),  # goes back
        ("open", float("nan"), "no NaN/inf values"),
        ("high", float("inf"), "no NaN/inf values"),
        ("low", float("-inf"), "no NaN/inf values"),
        ("close", float("nan"), "no NaN/inf values"),
        ("volume", float("nan"), "no NaN/inf values"),
        ("high", 13.2, "high >= max(open, close)"),  # row 3: open 13, close 13.5
        ("high", 12.0, "high >= max(open, close)"),
        ("low", 13.2, "low <= min(open, close)"),
        ("low", 0.0, "low > 0"),
        ("low", -1.0, "low > 0"),
        ("volume", -0.1, "volume >= 0"),
    ],
)
def test_each_broken_rule_is_named_with_its_row(column: str, value: float, rule: str) -> None:
    with pytest.raises(CandleValidationError) as caught:
        validate_candles(broken(column, 3, value))
    error = caught.value
    assert (error.symbol, error.row, error.rule) == ("TEST/USDT:USDT", 3, rule)
    assert error.timestamp_ms == int(broken(column, 3, value).timestamp[3])
    message = str(error)
    assert "TEST/USDT:USDT" in message
    assert "row 3" in message
    assert f"'{rule}'" in message
    assert str(error.timestamp_ms) in message
    assert isinstance(error, ValueError)


def test_the_first_bad_row_is_reported_with_a_count() -> None:
    candles = sample()
    volume = candles.volume.copy()
    volume[[1, 4]] = -1.0
    with pytest.raises(CandleValidationError, match=r"row 1 \(timestamp \d+ = 2024-01-01 01:00:00 UTC\).*2 rows"):
        validate_candles(sample(volume=volume))


def test_structural_errors() -> None:
    with pytest.raises(CandleValidationError, match="equally long"):
        validate_candles(sample(volume=np.ones(4)))
    with pytest.raises(CandleValidationError, match="integers"):
        validate_candles(sample(timestamp=T0 + HOUR * np.arange(5, dtype=np.float64)))


def test_funding_validation() -> None:
    validate_funding(Funding("X", np.array([1, 2], dtype=np.int64), np.array([0.1, -0.1])))
    with pytest.raises(CandleValidationError, match=r"row 1 .*strictly increasing"):
        validate_funding(Funding("X", np.array([2, 2], dtype=np.int64), np.array([0.1, 0.1])))
    with pytest.raises(CandleValidationError, match=r"row 0 .*NaN"):
        validate_funding(Funding("X", np.array([1, 2], dtype=np.int64), np.array([np.nan, 0.1])))


async def test_validation_of_the_real_file_takes_milliseconds(replay: ReplayMarketData) -> None:
    candles = await replay.candles(BTC, "1h")
    started = time.perf_counter()
    validate_candles(candles)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"validating {len(candles)} rows took {elapsed * 1000:.1f} ms"


# --- gaps --------------------------------------------------------------------------------------------


def at_hours(*hours: int) -> Candles:
    return sample(rows=len(hours), timestamp=T0 + HOUR * np.array(hours, dtype=np.int64))


def test_find_gaps_reports_missing_candles() -> None:
    assert find_gaps(at_hours(0, 1, 2, 5, 6, 8)) == [
        Gap(T0 + 2 * HOUR, T0 + 5 * HOUR, 2),
        Gap(T0 + 6 * HOUR, T0 + 8 * HOUR, 1),
    ]


def test_no_gaps_in_contiguous_or_tiny_series() -> None:
    assert find_gaps(at_hours(0, 1, 2, 3)) == []
    assert find_gaps(at_hours(7)) == []
    assert find_gaps(sample(rows=0)) == []


def test_gap_to_an_off_grid_candle_counts_the_slots_between() -> None:
    candles = sample(rows=2, timestamp=np.array([T0, T0 + 2 * HOUR + 1_000], dtype=np.int64))
    assert find_gaps(candles) == [Gap(T0, T0 + 2 * HOUR + 1_000, 2)]


def test_find_gaps_needs_a_known_timeframe() -> None:
    candles = sample()
    with pytest.raises(UnknownMarketData, match="timeframe"):
        find_gaps(
            Candles(
                "X", "7h", candles.timestamp, candles.open, candles.high, candles.low, candles.close, candles.volume
            )
        )


# --- ccxt: a fake exchange ---------------------------------------------------------------------------


def ohlcv_rows(count: int) -> list[list[float]]:
    return [[T0 + i * HOUR, 100.0 + i, 102.0 + i, 99.0 + i, 101.0 + i, 10.0 + i] for i in range(count)]


def funding_entries(count: int, jitter_ms: int = 3) -> list[dict[str, Any]]:
    return [
        {"symbol": BTC, "timestamp": T0 + i * 8 * HOUR + jitter_ms, "fundingRate": 0.0001 * (i + 1)}
        for i in range(count)
    ]


class FakeExchange:
    """Serves pages like Binance: rows with timestamp >= since, at most `limit`; records every call."""

    id = "fake"

    def __init__(
        self,
        ohlcv: list[list[float]] | None = None,
        funding: list[dict[str, Any]] | None = None,
        errors: list[Exception] | None = None,
        repeat_boundary_row: bool = False,
        markets: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.ohlcv = ohlcv or []
        self.funding = funding or []
        self.errors = errors or []
        self.repeat_boundary_row = repeat_boundary_row
        self.markets = markets
        self.calls: list[tuple[str, str, int | None, int | None]] = []

    def _page(self, rows: list[Any], stamp: Callable[[Any], int], since: int | None, limit: int | None) -> list[Any]:
        if self.errors:
            raise self.errors.pop(0)
        newer = [row for row in rows if since is None or stamp(row) >= since]
        older = [row for row in rows if since is not None and stamp(row) < since]
        if self.repeat_boundary_row and older and newer:
            newer = [older[-1], *newer]
        return [list(row) if isinstance(row, list) else dict(row) for row in newer[:limit]]

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str = "1m", since: int | None = None, limit: int | None = None
    ) -> list[list[float]]:
        self.calls.append(("fetch_ohlcv", symbol, since, limit))
        return self._page(self.ohlcv, lambda row: int(row[0]), since, limit)

    async def fetch_funding_rate_history(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        self.calls.append(("fetch_funding_rate_history", symbol, since, limit))
        return self._page(self.funding, lambda entry: int(entry["timestamp"]), since, limit)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


FAR_FUTURE = T0 + 10_000 * HOUR


def provider(exchange: FakeExchange, sleeps: Sleeps | None = None, now: int = FAR_FUTURE, **kw: Any) -> CcxtMarketData:
    return CcxtMarketData(exchange, sleep=sleeps or Sleeps(), now_ms=lambda: now, **kw)


def since_values(exchange: FakeExchange) -> list[int | None]:
    return [since for _, _, since, _ in exchange.calls]


async def test_candles_paginate_over_pages() -> None:
    exchange = FakeExchange(ohlcv=ohlcv_rows(10))
    candles = await provider(exchange, page_limit=4).candles(BTC, "1h", start_ms=T0)
    assert candles.timestamp.tolist() == [T0 + i * HOUR for i in range(10)]
    assert candles.close.tolist() == [101.0 + i for i in range(10)]
    assert since_values(exchange) == [T0, T0 + 3 * HOUR + 1, T0 + 7 * HOUR + 1, T0 + 9 * HOUR + 1]
    assert {limit for *_, limit in exchange.calls} == {4}
    assert {symbol for _, symbol, _, _ in exchange.calls} == {BTC}
    assert (candles.symbol, candles.timeframe) == (BTC, "1h")


async def test_candles_stop_at_the_end_bound() -> None:
    exchange = FakeExchange(ohlcv=ohlcv_rows(10))
    candles = await provider(exchange, page_limit=4).candles(BTC, "1h", start_ms=T0 + HOUR, end_ms=T0 + 6 * HOUR)
    assert candles.timestamp.tolist() == [T0 + i * HOUR for i in range(1, 6)]
    assert since_values(exchange) == [T0 + HOUR, T0 + 4 * HOUR + 1]  # no request beyond the end


async def test_a_repeated_boundary_row_is_kept_once() -> None:
    exchange = FakeExchange(ohlcv=ohlcv_rows(10), repeat_boundary_row=True)
    candles = await provider(exchange, page_limit=4).candles(BTC, "1h", start_ms=T0)
    assert candles.timestamp.tolist() == [T0 + i * HOUR for i in range(10)]
    assert len(exchange.calls) == 4  # the last page holds only the repeated row: nothing newer, stop


async def test_the_forming_candle_is_dropped() -> None:
    exchange = FakeExchange(ohlcv=ohlcv_rows(10))
    now = T0 + 9 * HOUR + 30 * 60_000  # candle 9 opened half an hour ago
    candles = await provider(exchange, now=now, page_limit=4).candles(BTC, "1h", start_ms=T0)
    assert int(candles.timestamp[-1]) == T0 + 8 * HOUR


async def test_without_start_the_last_page_before_now_is_fetched() -> None:
    exchange = FakeExchange(ohlcv=ohlcv_rows(10))
    candles = await provider(exchange, now=T0 + 10 * HOUR, page_limit=4).candles(BTC, "1h")
    assert candles.timestamp.tolist() == [T0 + i * HOUR for i in range(6, 10)]
    assert since_values(exchange) == [T0 + 6 * HOUR]


async def test_bad_rows_from_the_exchange_fail_validation() -> None:
    rows = ohlcv_rows(3)
    rows[1][5] = None
    with pytest.raises(CandleValidationError, match=r"row 1 .*NaN"):
        await provider(FakeExchange(ohlcv=rows)).candles(BTC, "1h", start_ms=T0)
    rows = ohlcv_rows(3)
    rows[2][2] = 50.0  # high below open
    with pytest.raises(CandleValidationError, match=r"row 2 .*high >= max"):
        await provider(FakeExchange(ohlcv=rows)).candles(BTC, "1h", start_ms=T0)


async def test_funding_paginates_rounds_jitter_and_honours_the_end() -> None:
    exchange = FakeExchange(funding=funding_entries(7), repeat_boundary_row=True)
    funding = await provider(exchange, page_limit=3).funding(BTC, start_ms=T0, end_ms=T0 + 6 * 8 * HOUR)
    assert funding.timestamp.tolist() == [T0 + i * 8 * HOUR for i in range(6)]
    assert funding.rate.tolist() == pytest.approx([0.0001 * (i + 1) for i in range(6)])
    assert since_values(exchange) == [T0, T0 + 2 * 8 * HOUR + 4, T0 + 4 * 8 * HOUR + 4]
    assert {name for name, *_ in exchange.calls} == {"fetch_funding_rate_history"}


# --- ccxt: errors --------------------------------------------------------------------------------------


async def test_network_errors_are_retried_with_growing_delays() -> None:
    sleeps = Sleeps()
    exchange = FakeExchange(ohlcv=ohlcv_rows(3), errors=[ccxt.NetworkError("reset"), ccxt.NetworkError("reset")])
    candles = await provider(exchange, sleeps).candles(BTC, "1h", start_ms=T0)
    assert len(candles) == 3
    assert sleeps.delays == [1.0, 2.0]
    assert since_values(exchange)[:3] == [T0, T0, T0]  # the same request, retried


@pytest.mark.parametrize(
    "error",
    [ccxt.RequestTimeout, ccxt.DDoSProtection, ccxt.RateLimitExceeded, ccxt.ExchangeNotAvailable, ccxt.OnMaintenance],
)
async def test_every_transient_error_is_retried(error: type[Exception]) -> None:
    sleeps = Sleeps()
    exchange = FakeExchange(funding=funding_entries(2), errors=[error("try later")])
    funding = await provider(exchange, sleeps).funding(BTC, start_ms=T0)
    assert len(funding) == 2
    assert sleeps.delays == [1.0]


async def test_retries_are_bounded_and_the_cause_is_kept() -> None:
    sleeps = Sleeps()
    exchange = FakeExchange(ohlcv=ohlcv_rows(3), errors=[ccxt.NetworkError(f"down {i}") for i in range(3)])
    with pytest.raises(MarketDataError, match="after 3 attempts") as caught:
        await provider(exchange, sleeps).candles(BTC, "1h", start_ms=T0)
    assert not isinstance(caught.value, UnknownMarketData)
    assert isinstance(caught.value.__cause__, ccxt.NetworkError)
    assert len(exchange.calls) == 3
    assert sleeps.delays == [1.0, 2.0]


async def test_attempts_and_backoff_are_configurable() -> None:
    sleeps = Sleeps()
    exchange = FakeExchange(ohlcv=ohlcv_rows(3), errors=[ccxt.RequestTimeout("slow")] * 4)
    md = provider(exchange, sleeps, max_attempts=5, base_delay=0.5, max_delay=1.5)
    assert len(await md.candles(BTC, "1h", start_ms=T0)) == 3
    assert sleeps.delays == [0.5, 1.0, 1.5, 1.5]


async def test_bad_symbol_is_unknown_market_data_at_once() -> None:
    sleeps = Sleeps()
    exchange = FakeExchange(errors=[ccxt.BadSymbol("binanceusdm does not have market symbol FOO/USDT:USDT")] * 2)
    md = provider(exchange, sleeps)
    with pytest.raises(UnknownMarketData, match="FOO/USDT:USDT") as caught:
        await md.candles("FOO/USDT:USDT", "1h", start_ms=T0)
    assert isinstance(caught.value.__cause__, ccxt.BadSymbol)
    with pytest.raises(UnknownMarketData):
        await md.funding("FOO/USDT:USDT", start_ms=T0)
    assert len(exchange.calls) == 2  # one per request: never retried
    assert sleeps.delays == []


@pytest.mark.parametrize(
    "error", [ccxt.AuthenticationError("invalid api key"), ccxt.NotSupported("no history"), ccxt.ExchangeError("?")]
)
async def test_other_exchange_errors_fail_at_once(error: Exception) -> None:
    sleeps = Sleeps()
    exchange = FakeExchange(ohlcv=ohlcv_rows(3), errors=[error])
    with pytest.raises(MarketDataError, match=type(error).__name__) as caught:
        await provider(exchange, sleeps).candles(BTC, "1h", start_ms=T0)
    assert not isinstance(caught.value, UnknownMarketData)
    assert caught.value.__cause__ is error
    assert len(exchange.calls) == 1
    assert sleeps.delays == []


async def test_unknown_timeframe_is_rejected_before_any_request() -> None:
    exchange = FakeExchange(ohlcv=ohlcv_rows(3))
    with pytest.raises(UnknownMarketData, match="timeframe"):
        await provider(exchange).candles(BTC, "2h")
    assert exchange.calls == []


def test_ccxt_symbols_are_the_loaded_linear_perpetuals() -> None:
    markets = {
        "BTC/USDT": {"symbol": "BTC/USDT", "spot": True},
        "ETH/USDT:USDT": {"symbol": "ETH/USDT:USDT", "swap": True, "linear": True},
        BTC: {"symbol": BTC, "swap": True, "linear": True, "active": True},
        "BTC/USD:BTC": {"symbol": "BTC/USD:BTC", "swap": True, "linear": False, "inverse": True},
        "LUNA/USDT:USDT": {"symbol": "LUNA/USDT:USDT", "swap": True, "linear": True, "active": False},
        "BTC/USDT:USDT-231229": {"symbol": "BTC/USDT:USDT-231229", "future": True, "linear": True, "expiry": 1},
    }
    md = CcxtMarketData(FakeExchange(markets=markets))
    assert md.symbols() == [BTC, "ETH/USDT:USDT"]
    assert md.name == "ccxt:fake"
    with pytest.raises(MarketDataError, match="load_markets"):
        CcxtMarketData(FakeExchange()).symbols()
