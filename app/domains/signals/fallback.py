"""The 24-hour momentum rule, kept as an explicit strategy so it can never run unnoticed.

BUY if the 24 h change is above +1 %, SELL below -1 %, else HOLD; confidence
0.5 + |change in percent| x 0.02, capped at 0.95. Every signal it makes says
`source: fallback_momentum`.
"""

from dataclasses import dataclass
from decimal import Decimal

from app.core.clock import HOUR_MS
from app.domains.markets.candles import TIMEFRAME_MS, Candles

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


def momentum_signal(candles: Candles) -> MomentumSignal:
    """The rule on the last closed candle and the one 24 hours before it."""
    step = 24 * HOUR_MS // TIMEFRAME_MS[candles.timeframe]
    if len(candles) <= step:
        raise NotEnoughHistory(f"{candles.symbol}: need more than {step} candles for a 24 h change")
    # In decimal, so that exactly +1 % is HOLD, as the rule says, and not float noise above it.
    last, before = Decimal(repr(float(candles.close[-1]))), Decimal(repr(float(candles.close[-1 - step])))
    change_pct = (last / before - 1) * 100
    side = "LONG" if change_pct > THRESHOLD_PCT else "SHORT" if change_pct < -THRESHOLD_PCT else "HOLD"
    confidence = min(Decimal("0.95"), Decimal("0.5") + abs(change_pct) * Decimal("0.02"))
    return MomentumSignal(side, float(confidence), float(change_pct), int(candles.timestamp[-1]))
