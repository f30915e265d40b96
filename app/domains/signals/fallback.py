"""The 24-hour momentum rule, kept as an explicit strategy so it can never run unnoticed.

BUY if the 24 h change is above +1 %, SELL below -1 %, else HOLD; confidence
0.5 + |change in percent| x 0.02, capped at 0.95. Every signal it makes says
`source: fallback_momentum`.
"""

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from app.core.clock import HOUR_MS
from app.domains.markets.candles import TIMEFRAME_MS, Candles, FloatArray

SOURCE = "fallback_momentum"
THRESHOLD_PCT = Decimal(1)


@dataclass(frozen=True)
class MomentumSignal:
    side: str
    confidence: float
    change_24h_pct: float
    as_of_ms: int
    source: str = SOURCE


class NotEnoughHistory(ValueError):
    pass


def _step(candles: Candles) -> int:
    return 24 * HOUR_MS // TIMEFRAME_MS[candles.timeframe]


def _rule(last: float, before: float) -> tuple[str, Decimal, Decimal]:
    """Side, confidence and 24 h change in percent, in decimal, so that exactly +1 % is HOLD, as the rule says,
    and not float noise above it."""
    change_pct = (Decimal(repr(last)) / Decimal(repr(before)) - 1) * 100
    side = "LONG" if change_pct > THRESHOLD_PCT else "SHORT" if change_pct < -THRESHOLD_PCT else "HOLD"
    confidence = min(Decimal("0.95"), Decimal("0.5") + abs(change_pct) * Decimal("0.02"))
    return side, confidence, change_pct


def momentum_signal(candles: Candles) -> MomentumSignal:
    """The rule on the last closed candle and the one 24 hours before it."""
    step = _step(candles)
    if len(candles) <= step:
        raise NotEnoughHistory(f"{candles.symbol}: need more than {step} candles for a 24 h change")
    side, confidence, change_pct = _rule(float(candles.close[-1]), float(candles.close[-1 - step]))
    return MomentumSignal(side, float(confidence), float(change_pct), int(candles.timestamp[-1]))


DIRECTION = {"LONG": 1.0, "SHORT": -1.0, "HOLD": 0.0}


def momentum_series(candles: Candles) -> tuple[FloatArray, FloatArray]:
    """The rule at every candle, from that candle and the one 24 hours before it: direction (+1 LONG, -1 SHORT,
    0 HOLD) and confidence; NaN confidence where the 24 h change is not known yet (the first day)."""
    step = _step(candles)
    close = candles.close
    direction = np.zeros(len(close))
    confidence = np.full(len(close), np.nan)
    for t in range(step, len(close)):
        side, conf, _ = _rule(float(close[t]), float(close[t - step]))
        direction[t], confidence[t] = DIRECTION[side], float(conf)
    return direction, confidence
