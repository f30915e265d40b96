"""What the exit side reads of the market at a closed bar, from that bar and earlier ones only.

The signals' own features and regime rule (`signals.regime`), not a second definition:
- regime: `detect_regime` (TRENDING / RANGING / VOLATILE);
- bias: the sign of the 72-bar drift t-statistic (`drift_t_stat`) where |t| reaches the TRENDING
  threshold (BULLISH above, BEARISH below), NEUTRAL otherwise;
- trend strength: |t| (the kill score's trend-drop compares it with the value at entry);
- volatility ratio: realized volatility over its median of the last 720 bars (the harvest policy's input).

Needs `READING_BARS` closed bars behind the bar read (the volatility lookback, the 72-bar drift and the
indicators' warm-up); with fewer, there is no reading and the kill score and heat gate do not run.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.domains.execution.paper import Bar
from app.domains.exits.harvest import Bias, MarketView
from app.domains.markets.candles import Candles, FloatArray, IntArray
from app.domains.signals.features import WARMUP, compute_features
from app.domains.signals.regime import Regime, RegimeConfig, drift_t_stats, regimes_of, volatility_ratios

READING_BARS = RegimeConfig().volatility_lookback + WARMUP


@dataclass(frozen=True, slots=True)
class MarketReading:
    open_ms: int  # the bar read (as of its close)
    regime: Regime
    bias: Bias
    trend_strength: float
    volatility_ratio: float | None

    @property
    def view(self) -> MarketView:
        return MarketView(self.bias, self.trend_strength)

    def as_json(self) -> dict[str, object]:
        return {
            "open_ms": self.open_ms,
            "regime": self.regime.value,
            "bias": self.bias.value,
            "trend_strength": self.trend_strength,
            "volatility_ratio": self.volatility_ratio,
        }


def read_market(
    symbol: str, bars: Sequence[Bar], at_open_ms: Sequence[int], config: RegimeConfig | None = None
) -> dict[int, MarketReading]:
    """Readings at the bars opening at `at_open_ms` (each from the bars up to it; `bars` ascending, consecutive
    1h bars). A bar without enough history behind it, or not in `bars`, has no reading."""
    if not bars or not at_open_ms:
        return {}
    opens = np.fromiter((b.open_ms for b in bars), dtype=np.int64, count=len(bars))
    closes = np.fromiter((float(b.close) for b in bars), dtype=np.float64, count=len(bars))
    return read_closes(symbol, opens, closes, at_open_ms, config)


def read_closes(
    symbol: str, opens: IntArray, closes: FloatArray, at_open_ms: Sequence[int], config: RegimeConfig | None = None
) -> dict[int, MarketReading]:
    """`read_market` from the bars' open times and closes (the regime rule reads closes only: ret_72,
    rvol_24; the other prices stand at the close), for a caller that keeps them converted."""
    cfg = config or RegimeConfig()
    if not len(opens) or not at_open_ms:
        return {}
    candles = Candles(symbol, "1h", opens, closes, closes, closes, closes, np.zeros(len(opens)))
    features = compute_features(candles)
    wanted: dict[int, int] = {}
    for open_ms in at_open_ms:
        row = int(np.searchsorted(candles.timestamp, open_ms))
        if row < len(opens) and candles.timestamp[row] == open_ms and features.valid[row]:
            wanted[open_ms] = row
    out: dict[int, MarketReading] = {}
    if not wanted:
        return out
    span = range(min(wanted.values()), max(wanted.values()) + 1)  # one pass over the rows asked about
    t_stats = drift_t_stats(features, span)
    ratios = volatility_ratios(features, span, cfg)
    regimes = regimes_of(ratios, t_stats, cfg)
    for open_ms, row in wanted.items():
        t, ratio = float(t_stats[row - span.start]), float(ratios[row - span.start])
        if not math.isfinite(t):
            continue
        bias = Bias.BULLISH if t >= cfg.trend_t_stat else Bias.BEARISH if t <= -cfg.trend_t_stat else Bias.NEUTRAL
        out[open_ms] = MarketReading(
            open_ms, regimes[row - span.start], bias, abs(t), ratio if math.isfinite(ratio) else None
        )
    return out
