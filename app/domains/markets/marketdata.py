"""Where candles and funding rates come from: bundled files for replay, or an exchange through ccxt.

Both providers hand out the same validated `Candles`/`Funding`, so a signal cannot tell a backtest from
live trading. Gaps are reported (`find_gaps`), never filled: a synthetic candle is a price nobody traded at.
"""

import asyncio
import gzip
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import ccxt
import numpy as np

from app.core.clock import HOUR_MS
from app.domains.markets.candles import TIMEFRAME_MS, Candles, FloatArray, Funding, IntArray

logger = logging.getLogger(__name__)

CANDLE_HEADER = "timestamp,open,high,low,close,volume"
FUNDING_HEADER = "timestamp,funding_rate"
# Binance USDT-M perpetuals settle funding every 8 h; used only to size the default window of a live request.
FUNDING_INTERVAL_MS = 8 * HOUR_MS

# Errors worth retrying: the request may succeed if sent again. Everything else is a fact about the request.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    ccxt.NetworkError,
    ccxt.RequestTimeout,
    ccxt.DDoSProtection,
    ccxt.RateLimitExceeded,
    ccxt.ExchangeNotAvailable,
)


class MarketDataError(Exception):
    """Market data could not be obtained or is unusable."""


class UnknownMarketData(MarketDataError, LookupError):
    """No data for this symbol/timeframe (not an outage: asking again will not help)."""


class CandleValidationError(MarketDataError, ValueError):
    """A series breaks an invariant every consumer relies on; carries where, so the bad row can be found."""

    def __init__(self, symbol: str, row: int | None, timestamp_ms: int | None, rule: str, detail: str = "") -> None:
        self.symbol = symbol
        self.row = row
        self.timestamp_ms = timestamp_ms
        self.rule = rule
        where = "" if row is None else f" row {row}"
        when = "" if timestamp_ms is None else f" (timestamp {timestamp_ms} = {_iso(timestamp_ms)})"
        super().__init__(f"{symbol}:{where}{when} breaks rule '{rule}'" + (f": {detail}" if detail else ""))


def _iso(timestamp_ms: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "out of range"


# --- validation and gaps -------------------------------------------------------------------------


def _first_bad(
    symbol: str, timestamps: IntArray, bad: np.ndarray[Any, np.dtype[np.bool_]], rule: str, detail: Callable[[int], str]
) -> None:
    """Raise for the first row flagged in `bad` (one vectorised pass per rule; Python only on failure)."""
    if not bad.any():
        return
    row = int(np.argmax(bad))
    count = int(np.count_nonzero(bad))
    more = f" ({count} rows break it)" if count > 1 else ""
    raise CandleValidationError(symbol, row, int(timestamps[row]), rule, detail(row) + more)


def _check_lengths(symbol: str, columns: dict[str, np.ndarray[Any, Any]]) -> None:
    lengths = {name: int(col.shape[0]) for name, col in columns.items()}
    if len(set(lengths.values())) > 1 or any(col.ndim != 1 for col in columns.values()):
        raise CandleValidationError(symbol, None, None, "columns are 1-D and equally long", f"lengths {lengths}")


def _check_timestamps(symbol: str, ts: IntArray) -> None:
    if not np.issubdtype(ts.dtype, np.integer):
        raise CandleValidationError(symbol, None, None, "timestamps are integers (ms)", f"dtype {ts.dtype}")
    step = np.diff(ts)
    bad = np.concatenate(([False], step <= 0))
    _first_bad(
        symbol,
        ts,
        bad,
        "timestamps strictly increasing",
        lambda i: f"timestamp {int(ts[i])} follows {int(ts[i - 1])}",
    )


def _describe(name: str, column: FloatArray, row: int) -> str:
    return f"{name}={column[row]}"


def validate_candles(c: Candles) -> None:
    """Raise `CandleValidationError` for the first broken invariant; silent on valid (also empty) candles."""
    columns = {"open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume}
    _check_lengths(c.symbol, {"timestamp": c.timestamp, **columns})
    ts = c.timestamp
    _check_timestamps(c.symbol, ts)
    for name, col in columns.items():
        _first_bad(c.symbol, ts, ~np.isfinite(col), "no NaN/inf values", partial(_describe, name, col))

    def ohlc(i: int) -> str:
        return f"open={c.open[i]} high={c.high[i]} low={c.low[i]} close={c.close[i]}"

    _first_bad(c.symbol, ts, c.high < np.maximum(c.open, c.close), "high >= max(open, close)", ohlc)
    _first_bad(c.symbol, ts, c.low > np.minimum(c.open, c.close), "low <= min(open, close)", ohlc)
    _first_bad(c.symbol, ts, c.low <= 0, "low > 0", ohlc)
    _first_bad(c.symbol, ts, c.volume < 0, "volume >= 0", lambda i: f"volume={c.volume[i]}")


def validate_funding(f: Funding) -> None:
    """Funding must be as orderly as candles: it is joined onto them by timestamp."""
    _check_lengths(f.symbol, {"timestamp": f.timestamp, "rate": f.rate})
    _check_timestamps(f.symbol, f.timestamp)
    _first_bad(f.symbol, f.timestamp, ~np.isfinite(f.rate), "no NaN/inf values", partial(_describe, "rate", f.rate))


@dataclass(frozen=True)
class Gap:
    """Consecutive candles at `after_ms` and `before_ms`, with `missing` candle slots between them."""

    after_ms: int
    before_ms: int
    missing: int


def _timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise UnknownMarketData(f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAME_MS)}") from None


def find_gaps(c: Candles) -> list[Gap]:
    """Places where consecutive candles are more than one timeframe apart (outages, delistings, bad downloads)."""
    step_ms = _timeframe_ms(c.timeframe)
    ts = c.timestamp.astype(np.int64, copy=False)
    steps = np.diff(ts)
    at = np.flatnonzero(steps > step_ms)
    # Slots strictly between the two candles on the grid of the earlier one; (d - 1) // step also counts
    # a slot when the later candle is off the grid.
    missing = (steps[at] - 1) // step_ms
    return [Gap(int(ts[i]), int(ts[i + 1]), int(m)) for i, m in zip(at, missing, strict=True)]


# --- the provider interface ------------------------------------------------------------------------


@runtime_checkable
class MarketData(Protocol):
    """A source of validated candles and funding; `start_ms` inclusive, `end_ms` exclusive (open time, ms UTC)."""

    name: str

    async def candles(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> Candles: ...

    async def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> Funding: ...

    def symbols(self) -> list[str]: ...


def _check_range(start_ms: int | None, end_ms: int | None) -> None:
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise ValueError(f"start_ms {start_ms} is after end_ms {end_ms}")


# --- replay from bundled files ---------------------------------------------------------------------


def default_data_root() -> Path:
    """`MARKET_DATA_DIR`, else the shared multi-year data beside the repository (independent of the CWD)."""
    configured = os.environ.get("MARKET_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    repo_root = Path(__file__).resolve().parents[3]
    return repo_root.parent / "shared" / "data" / "market" / "long"


def symbol_file_stem(symbol: str) -> str:
    """freqtrade's file naming: "BTC/USDT:USDT" -> "BTC_USDT_USDT"."""
    stem = symbol
    for char in "/ .@$+:":
        stem = stem.replace(char, "_")
    return stem


def _read_table(path: Path, header: str, columns: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The numeric body of a (gzip) CSV with exactly this header, as float64 rows."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    first, _, body = raw.partition(b"\n")
    found = first.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    if found != header:
        raise MarketDataError(f"{path}: header is {found!r}, expected {header!r}")
    if not body.strip():
        return np.empty((0, columns), dtype=np.float64)
    try:
        table = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise MarketDataError(f"{path}: unreadable CSV (rows counted after the header): {exc}") from exc
    if table.shape[1] != columns:
        raise MarketDataError(f"{path}: {table.shape[1]} columns, expected {columns}")
    return table


def _timestamps(path: Path, symbol: str, column: FloatArray) -> IntArray:
    with np.errstate(invalid="ignore"):  # NaN/inf cast to garbage here, and are reported just below
        ts = column.astype(np.int64)
    inexact = np.flatnonzero(ts != column)
    if inexact.size:
        row = int(inexact[0])
        raise CandleValidationError(symbol, row, None, "timestamps are integers (ms)", f"{path}: {column[row]!r}")
    return ts


def _frozen(array: np.ndarray[Any, Any]) -> None:
    """Cached arrays are shared by every caller: make them read-only so one caller cannot corrupt the others."""
    array.flags.writeable = False


V = TypeVar("V")


class _Lru(Generic[V]):
    """A small thread-safe LRU; loads of one key run once even when requested concurrently."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("cache size must be at least 1")
        self._size = size
        self._items: OrderedDict[tuple[str, ...], V] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, ...], threading.Lock] = {}

    def get(self, key: tuple[str, ...]) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def get_or_load(self, key: tuple[str, ...], load: Callable[[], V]) -> V:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            value = self.get(key)
            if value is None:
                value = load()
                with self._lock:
                    self._items[key] = value
                    while len(self._items) > self._size:
                        self._items.popitem(last=False)
            return value


class ReplayMarketData:
    """Bundled files (`<BASE>_<QUOTE>_<SETTLE>-<tf>-futures.csv.gz`, `...-8h-funding_rate.csv.gz`) as a provider.

    Parsed series are cached in memory (LRU) and handed out as read-only slices; file I/O and parsing run in a
    worker thread so a cold load never stalls the event loop.
    """

    name = "replay"

    def __init__(self, root: Path | None = None, *, cache_size: int = 4) -> None:
        self.root = Path(root) if root is not None else default_data_root()
        self._candles: _Lru[Candles] = _Lru(cache_size)
        self._funding: _Lru[Funding] = _Lru(cache_size)

    def candle_path(self, symbol: str, timeframe: str) -> Path:
        return self.root / f"{symbol_file_stem(symbol)}-{timeframe}-futures.csv.gz"

    def funding_path(self, symbol: str) -> Path:
        return self.root / f"{symbol_file_stem(symbol)}-8h-funding_rate.csv.gz"

    def symbols(self) -> list[str]:
        """Perpetuals with 1h futures candles in `root` (a directory listing: cheap enough for the event loop)."""
        if not self.root.is_dir():
            raise MarketDataError(f"market data directory {self.root} does not exist (set MARKET_DATA_DIR)")
        found = []
        for path in self.root.glob("*-1h-futures.csv.gz"):
            parts = path.name.removesuffix("-1h-futures.csv.gz").split("_")
            if len(parts) == 3 and all(parts):
                found.append(f"{parts[0]}/{parts[1]}:{parts[2]}")
        return sorted(found)

    async def candles(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> Candles:
        _check_range(start_ms, end_ms)
        _timeframe_ms(timeframe)
        key = (symbol, timeframe)
        series = self._candles.get(key)
        if series is None:
            path = self.candle_path(symbol, timeframe)
            series = await asyncio.to_thread(
                self._candles.get_or_load, key, lambda: self._load_known(path, symbol, timeframe)
            )
        first, stop = _bounds(series.timestamp, start_ms, end_ms)
        return series.slice(first, stop)

    async def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> Funding:
        _check_range(start_ms, end_ms)
        key = (symbol,)
        series = self._funding.get(key)
        if series is None:
            path = self.funding_path(symbol)
            series = await asyncio.to_thread(
                self._funding.get_or_load, key, lambda: self._load_known_funding(path, symbol)
            )
        first, stop = _bounds(series.timestamp, start_ms, end_ms)
        return Funding(series.symbol, series.timestamp[first:stop], series.rate[first:stop])

    def _load_known(self, path: Path, symbol: str, timeframe: str) -> Candles:
        if not path.is_file():
            raise UnknownMarketData(f"{self.name}: no {timeframe} candles for {symbol} ({path} not found)")
        return self.load_candles_file(path, symbol, timeframe)

    def _load_known_funding(self, path: Path, symbol: str) -> Funding:
        if not path.is_file():
            raise UnknownMarketData(f"{self.name}: no funding rates for {symbol} ({path} not found)")
        return self.load_funding_file(path, symbol)

    @staticmethod
    def load_candles_file(path: Path, symbol: str, timeframe: str) -> Candles:
        """Any `timestamp,open,high,low,close,volume` CSV (gzip or plain), parsed and validated; blocking."""
        _timeframe_ms(timeframe)
        path = Path(path)
        table = _read_table(path, CANDLE_HEADER, 6)
        columns = [np.ascontiguousarray(table[:, i]) for i in range(1, 6)]
        candles = Candles(symbol, timeframe, _timestamps(path, symbol, table[:, 0]), *columns)
        validate_candles(candles)
        for array in (candles.timestamp, *columns):
            _frozen(array)
        return candles

    @staticmethod
    def load_funding_file(path: Path, symbol: str) -> Funding:
        """Any `timestamp,funding_rate` CSV (gzip or plain), parsed and validated; blocking."""
        path = Path(path)
        table = _read_table(path, FUNDING_HEADER, 2)
        funding = Funding(symbol, _timestamps(path, symbol, table[:, 0]), np.ascontiguousarray(table[:, 1]))
        validate_funding(funding)
        _frozen(funding.timestamp)
        _frozen(funding.rate)
        return funding


def _bounds(timestamps: IntArray, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    first = 0 if start_ms is None else int(np.searchsorted(timestamps, start_ms, side="left"))
    stop = len(timestamps) if end_ms is None else int(np.searchsorted(timestamps, end_ms, side="left"))
    return first, max(first, stop)


# --- live data through ccxt ------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CcxtMarketData:
    """Live candles and funding from a ccxt async exchange (e.g. `ccxt.async_support.binanceusdm()`).

    Only transient errors (network, timeouts, rate limits, exchange unavailable) are retried, with bounded
    exponential backoff (freqtrade's approach); a bad symbol or bad credentials fail at once because asking
    again cannot fix them. Only closed candles are returned: the one still forming would repaint signals.
    """

    def __init__(
        self,
        exchange: Any,
        *,
        max_attempts: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        page_limit: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now_ms: Callable[[], int] = _now_ms,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if page_limit < 1:
            raise ValueError("page_limit must be at least 1")
        self.exchange = exchange
        self.name = f"ccxt:{getattr(exchange, 'id', type(exchange).__name__)}"
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.page_limit = page_limit
        self._sleep = sleep
        self._now_ms = now_ms

    def symbols(self) -> list[str]:
        """Linear perpetual swaps of the loaded markets (call `await exchange.load_markets()` first)."""
        markets = getattr(self.exchange, "markets", None)
        if not markets:
            raise MarketDataError(f"{self.name}: markets are not loaded (await exchange.load_markets() first)")
        return sorted(
            m["symbol"]
            for m in markets.values()
            if m.get("swap") and m.get("linear") and m.get("active") is not False and not m.get("expiry")
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): doubling, capped at `max_delay`."""
        return float(min(self.base_delay * 2 ** (attempt - 1), self.max_delay))

    async def _call(self, what: str, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        attempt = 1
        while True:
            try:
                return await method(*args, **kwargs)
            except ccxt.BadSymbol as exc:
                raise UnknownMarketData(f"{self.name}: {what}: {exc}") from exc
            except TRANSIENT_ERRORS as exc:
                if attempt >= self.max_attempts:
                    raise MarketDataError(
                        f"{self.name}: {what}: still failing after {attempt} attempts: {type(exc).__name__}: {exc}"
                    ) from exc
                delay = self.backoff(attempt)
                logger.warning(
                    "%s: %s failed (%s: %s); retry %d/%d in %.1fs",
                    self.name,
                    what,
                    type(exc).__name__,
                    exc,
                    attempt,
                    self.max_attempts - 1,
                    delay,
                )
                await self._sleep(delay)
                attempt += 1
            except ccxt.BaseError as exc:
                raise MarketDataError(f"{self.name}: {what}: {type(exc).__name__}: {exc}") from exc

    async def _paginate(
        self,
        fetch: Callable[[int], Awaitable[Sequence[Any]]],
        timestamp_of: Callable[[Any], int],
        start_ms: int,
        stop_ms: int,
        key_of: Callable[[int], int] = int,
    ) -> dict[int, Any]:
        """Rows with start_ms <= key < stop_ms by key (a repeated row replaces the earlier copy).

        Pages are requested from just after the exchange's last stamp; `key_of` maps that stamp to the
        timestamp we publish (which may be normalised), so the bounds apply to what the caller sees.
        """
        rows: dict[int, Any] = {}
        since = start_ms
        while since < stop_ms:
            page = await fetch(since)
            if not page:
                break
            for row in page:
                key = key_of(timestamp_of(row))
                if start_ms <= key < stop_ms:
                    rows[key] = row
            last = max(timestamp_of(row) for row in page)
            if last < since:  # only rows we already have (exchanges may repeat the boundary row): no newer data
                break
            since = last + 1
        return rows

    async def candles(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> Candles:
        """Closed candles in [start_ms, end_ms); without `start_ms`, the last `page_limit` before end_ms/now."""
        _check_range(start_ms, end_ms)
        step_ms = _timeframe_ms(timeframe)
        now = self._now_ms()
        # A candle is closed once its whole period has passed: open + step <= now.
        stop = min(end_ms if end_ms is not None else now, now - step_ms + 1)
        start = start_ms if start_ms is not None else (stop - 1) // step_ms * step_ms - (self.page_limit - 1) * step_ms
        what = f"fetch_ohlcv({symbol}, {timeframe})"

        async def fetch(since: int) -> Sequence[Any]:
            page: Sequence[Any] = await self._call(
                what, self.exchange.fetch_ohlcv, symbol, timeframe, since=since, limit=self.page_limit
            )
            return page

        rows = await self._paginate(fetch, lambda row: int(row[0]), start, stop)
        return _candles_from_rows(symbol, timeframe, [rows[ts] for ts in sorted(rows)])

    async def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> Funding:
        """Settled funding in [start_ms, end_ms), timestamps rounded to the minute like the bundled files."""
        _check_range(start_ms, end_ms)
        now = self._now_ms()
        stop = min(end_ms, now + 1) if end_ms is not None else now + 1
        start = start_ms if start_ms is not None else stop - self.page_limit * FUNDING_INTERVAL_MS
        what = f"fetch_funding_rate_history({symbol})"

        async def fetch(since: int) -> Sequence[Any]:
            page: Sequence[Any] = await self._call(
                what, self.exchange.fetch_funding_rate_history, symbol, since=since, limit=self.page_limit
            )
            return page

        rows = await self._paginate(fetch, lambda entry: int(entry["timestamp"]), start, stop, _to_minute)
        timestamps = np.array(sorted(rows), dtype=np.int64)
        rates = np.array([_float(rows[ts].get("fundingRate")) for ts in sorted(rows)], dtype=np.float64)
        funding = Funding(symbol, timestamps, rates)
        validate_funding(funding)
        return funding


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _candles_from_rows(symbol: str, timeframe: str, rows: Sequence[Sequence[Any]]) -> Candles:
    table = np.array([[_float(v) for v in row[1:6]] for row in rows], dtype=np.float64).reshape(-1, 5)
    timestamps = np.array([int(row[0]) for row in rows], dtype=np.int64)
    candles = Candles(symbol, timeframe, timestamps, *(np.ascontiguousarray(table[:, i]) for i in range(5)))
    validate_candles(candles)
    return candles


def _to_minute(timestamp_ms: int) -> int:
    """Binance funding stamps carry a few ms of jitter; the bundled files are rounded to the minute, so are we."""
    return (timestamp_ms + 30_000) // 60_000 * 60_000
