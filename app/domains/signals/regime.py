"""Market regime from the features, and the behaviour each regime calls for.

Trending: the 72-candle move is large against its own noise (a t-statistic of the drift).
Volatile: 24-candle realized volatility well above its median over the last ~30 days.
Ranging: neither. The meta-strategy follows trends and fades extremes in ranges; in
volatile markets it keeps only strong signals.
"""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from app.domains.markets.candles import FloatArray
from app.domains.signals.features import FeatureMatrix


class Regime(StrEnum):
    TRENDING = "trending"
    RANGING = "ranging"
    VOLATILE = "volatile"


class Strategy(StrEnum):
    TREND_FOLLOWING = "trend_following"
    MEAN_REVERSION = "mean_reversion"
    STAND_ASIDE = "stand_aside"


@dataclass(frozen=True)
class RegimeConfig:
    trend_t_stat: float = 2.0
    volatility_ratio: float = 1.8
    volatility_lookback: int = 720
    strong_confidence: float = 0.7


STRATEGY = {
    Regime.TRENDING: Strategy.TREND_FOLLOWING,
    Regime.RANGING: Strategy.MEAN_REVERSION,
    Regime.VOLATILE: Strategy.STAND_ASIDE,
}


def detect_regime(features: FeatureMatrix, row: int, config: RegimeConfig | None = None) -> Regime:
    """The regime at `row`, from that row and earlier ones only."""
    return detect_regimes(features, range(row, row + 1), config)[0]


def detect_regimes(features: FeatureMatrix, rows: range, config: RegimeConfig | None = None) -> list[Regime]:
    """The regime at each of `rows` (each from that row and earlier ones only): VOLATILE when the volatility
    ratio is above `volatility_ratio`, else TRENDING when |drift t| >= `trend_t_stat`, else RANGING."""
    cfg = config or RegimeConfig()
    return regimes_of(volatility_ratios(features, rows, cfg), drift_t_stats(features, rows), cfg)


def regimes_of(ratio: FloatArray, t_stat: FloatArray, config: RegimeConfig | None = None) -> list[Regime]:
    """The regime rule on already computed volatility ratios and drift t-statistics (`detect_regimes`)."""
    cfg = config or RegimeConfig()
    with np.errstate(invalid="ignore"):
        volatile = np.isfinite(ratio) & (ratio > cfg.volatility_ratio)
        trending = np.isfinite(t_stat) & (np.abs(t_stat) >= cfg.trend_t_stat)
    return [
        Regime.VOLATILE if v else Regime.TRENDING if tr else Regime.RANGING
        for v, tr in zip(volatile.tolist(), trending.tolist(), strict=True)
    ]


def drift_t_stat(features: FeatureMatrix, row: int) -> float:
    """The 72-candle move against its own noise, signed (up > 0): ret_72 / (rvol_24 · √72); NaN while
    undefined. |t| ≥ `trend_t_stat` is what TRENDING means; the exit side reads its sign as the bias
    and |t| as the trend's strength."""
    return float(drift_t_stats(features, range(row, row + 1))[0])


def drift_t_stats(features: FeatureMatrix, rows: range) -> FloatArray:
    """`drift_t_stat` at each of `rows`."""
    move = features.column("ret_72")[rows.start : rows.stop]
    current = features.column("rvol_24")[rows.start : rows.stop]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = move / (current * np.sqrt(72.0))
    ok = np.isfinite(move) & np.isfinite(current) & (current > 0)
    return np.where(ok, t, np.nan)


def volatility_ratio(features: FeatureMatrix, row: int, config: RegimeConfig | None = None) -> float:
    """Realized volatility now over its median of the lookback (1 = normal; VOLATILE above
    `volatility_ratio`); NaN without 24 defined values."""
    return float(volatility_ratios(features, range(row, row + 1), config)[0])


_CHUNK = 4096  # rows per rolling-median block: bounds the (rows x lookback) window in memory
_FEW = 16  # up to this many rows, one at a time is faster


def volatility_ratios(features: FeatureMatrix, rows: range, config: RegimeConfig | None = None) -> FloatArray:
    """`volatility_ratio` at each of `rows`: rvol_24 over the median of its defined values in the lookback
    ending at the row (at least 24 of them)."""
    cfg = config or RegimeConfig()
    lookback = cfg.volatility_lookback
    rvol = features.column("rvol_24")
    out = np.full(len(rows), np.nan)
    if len(rows) <= _FEW:  # row by row: the same median, without the window machinery (the served call: one row)
        for i, row in enumerate(rows):
            history = rvol[max(0, row - lookback + 1) : row + 1]
            history = history[np.isfinite(history)]
            now = rvol[row]
            if history.size >= 24 and np.isfinite(now):
                middle = float(np.median(history))
                out[i] = now / middle if middle > 0 else np.nan
        return out
    for lo in range(rows.start, rows.stop, _CHUNK):
        hi = min(rows.stop, lo + _CHUNK)
        first = max(0, lo - lookback + 1)
        padded = np.concatenate([np.full(lookback - 1 - (lo - first), np.nan), rvol[first:hi]])
        windows = sliding_window_view(padded, lookback)  # row lo + i: rvol[lo + i - lookback + 1 .. lo + i]
        defined = np.isfinite(windows).sum(axis=1)
        enough = defined >= 24
        # the median of each window's defined values: sorted, NaN last, the middle one (or the mean of the two)
        ordered = np.sort(windows[enough], axis=1)
        count = defined[enough]
        picked = np.arange(len(count))
        median = np.full(hi - lo, np.nan)
        median[enough] = (ordered[picked, (count - 1) // 2] + ordered[picked, count // 2]) / 2
        current = rvol[lo:hi]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = current / median
        out[lo - rows.start : hi - rows.start] = np.where(enough & np.isfinite(current) & (median > 0), ratio, np.nan)
    return out


def apply_strategy(
    regime: Regime, side: str, confidence: float, features: FeatureMatrix, row: int, config: RegimeConfig | None = None
) -> tuple[str, float, Strategy]:
    """Adjust the ensemble's call to the regime's behaviour; returns (side, confidence, strategy)."""
    cfg = config or RegimeConfig()
    strategy = STRATEGY[regime]
    if strategy is Strategy.STAND_ASIDE and confidence < cfg.strong_confidence:
        return "HOLD", confidence, strategy
    if strategy is Strategy.MEAN_REVERSION:
        position = features.column("bb_position")[row]
        if (side == "LONG" and position > 1.0) or (side == "SHORT" and position < 0.0):
            return "HOLD", confidence, strategy  # do not chase a band break in a range
    return side, confidence, strategy
