"""Market regime from the features, and the behaviour each regime calls for.

Trending: the 72-candle move is large against its own noise (a t-statistic of the drift).
Volatile: 24-candle realized volatility well above its median over the last ~30 days.
Ranging: neither. The meta-strategy follows trends and fades extremes in ranges; in
volatile markets it keeps only strong signals.
"""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

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
    cfg = config or RegimeConfig()
    ratio = volatility_ratio(features, row, cfg)
    if np.isfinite(ratio) and ratio > cfg.volatility_ratio:
        return Regime.VOLATILE
    t_stat = drift_t_stat(features, row)
    if np.isfinite(t_stat) and abs(t_stat) >= cfg.trend_t_stat:
        return Regime.TRENDING
    return Regime.RANGING


def drift_t_stat(features: FeatureMatrix, row: int) -> float:
    """The 72-candle move against its own noise, signed (up > 0): ret_72 / (rvol_24 · √72); NaN while
    undefined. |t| ≥ `trend_t_stat` is what TRENDING means; the exit side reads its sign as the bias
    and |t| as the trend's strength."""
    move = features.column("ret_72")[row]
    current = features.column("rvol_24")[row]
    if not (np.isfinite(move) and np.isfinite(current) and current > 0):
        return float("nan")
    return float(move / (current * np.sqrt(72.0)))


def volatility_ratio(features: FeatureMatrix, row: int, config: RegimeConfig | None = None) -> float:
    """Realized volatility now over its median of the lookback (1 = normal; VOLATILE above
    `volatility_ratio`); NaN without 24 defined values."""
    cfg = config or RegimeConfig()
    rvol = features.column("rvol_24")
    history = rvol[max(0, row - cfg.volatility_lookback + 1) : row + 1]
    history = history[np.isfinite(history)]
    current = rvol[row]
    if history.size < 24 or not np.isfinite(current):
        return float("nan")
    median = float(np.median(history))
    return float(current / median) if median > 0 else float("nan")


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
