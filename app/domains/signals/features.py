"""Features of each candle, computed from that candle and earlier ones only (no look-ahead).

Every indicator and rolling statistic comes from TA-Lib, whose functions only look back;
the one hand-written step is the as-of join of funding settlements. A feature at candle t
is what is known when candle t closes.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import talib

from app.domains.markets.candles import TIMEFRAME_MS, Candles, FloatArray, Funding, IntArray

FEATURES: tuple[str, ...] = (
    "rsi_14",
    "macd_hist",
    "atr_pct",
    "bb_position",
    "ret_1",
    "ret_4",
    "ret_24",
    "ret_72",
    "rvol_24",
    "volume_z_72",
    "funding_rate",
)
RETURN_HORIZONS = (1, 4, 24, 72)
WARMUP = 100  # candles before every feature is defined (MACD 26+9, returns 72, volume 72)


@dataclass(frozen=True)
class FeatureMatrix:
    """Rows aligned with the candles; `valid[i]` is False while indicators warm up."""

    timestamp: IntArray
    values: FloatArray  # (n_candles, len(FEATURES))
    valid: npt.NDArray[np.bool_]
    names: tuple[str, ...] = FEATURES

    def column(self, name: str) -> FloatArray:
        return self.values[:, self.names.index(name)]


def funding_as_of(candles: Candles, funding: Funding | None) -> FloatArray:
    """The last funding rate settled by each candle's close (NaN before the first settlement)."""
    out = np.full(len(candles), np.nan)
    if funding is None or len(funding) == 0:
        return out
    closes_at = candles.timestamp + TIMEFRAME_MS[candles.timeframe]
    index = np.searchsorted(funding.timestamp, closes_at, side="right") - 1
    known = index >= 0
    out[known] = funding.rate[index[known]]
    return out


def compute_features(candles: Candles, funding: Funding | None = None) -> FeatureMatrix:
    close, high, low = candles.close, candles.high, candles.low
    rsi = talib.RSI(close, timeperiod=14) / 100.0
    _, _, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    atr = talib.ATR(high, low, close, timeperiod=14)
    upper, _, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0)
    width = upper - lower
    returns = [np.log(talib.ROCR(close, timeperiod=k)) for k in RETURN_HORIZONS]
    log_volume = np.log1p(candles.volume)
    volume_std = talib.STDDEV(log_volume, timeperiod=72, nbdev=1.0)
    volume_mean = talib.SMA(log_volume, timeperiod=72)
    with np.errstate(invalid="ignore", divide="ignore"):
        bb_position = np.where(width > 0, (close - lower) / width, 0.5)
        volume_z = np.where(volume_std > 0, (log_volume - volume_mean) / volume_std, 0.0)
    rvol = talib.STDDEV(returns[0], timeperiod=24, nbdev=1.0)
    funding_rate = funding_as_of(candles, funding)
    values = np.column_stack(
        [rsi, hist / close, atr / close, bb_position, *returns, rvol, volume_z, funding_rate]
    ).astype(np.float64)
    core = values[:, : len(FEATURES) - 1]
    valid: npt.NDArray[np.bool_] = np.asarray(np.isfinite(core).all(axis=1))
    valid[:WARMUP] = False
    values[:, -1] = np.nan_to_num(funding_rate, nan=0.0)  # no funding known yet reads as neutral
    return FeatureMatrix(timestamp=candles.timestamp, values=values, valid=valid)
