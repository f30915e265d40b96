"""OHLCV candles and funding rates as aligned numpy arrays (the unit every signal step shares)."""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.core.clock import HOUR_MS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": HOUR_MS, "4h": 4 * HOUR_MS, "1d": 24 * HOUR_MS}


@dataclass(frozen=True)
class Candles:
    """Candles of one symbol and timeframe, ascending by open time (ms since epoch, UTC)."""

    symbol: str
    timeframe: str
    timestamp: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def slice(self, start: int, stop: int) -> "Candles":
        """Rows [start, stop) as a new Candles (views, no copies)."""
        return Candles(
            self.symbol,
            self.timeframe,
            self.timestamp[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )

    def until(self, timestamp_ms: int) -> "Candles":
        """Candles opened at or before `timestamp_ms`."""
        return self.slice(0, int(np.searchsorted(self.timestamp, timestamp_ms, side="right")))


@dataclass(frozen=True)
class Funding:
    """Funding rate settlements of one perpetual, ascending by settlement time (ms, UTC)."""

    symbol: str
    timestamp: IntArray
    rate: FloatArray

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])
