"""The served decision: what a signal says, from the ensemble's class probabilities at one row.

One rule, used by the signal service and by every evaluation of what is served: the argmax class
and its probability, then the regime's behaviour (`regime.apply_strategy`). The active profile's
minimum confidence is applied after this by RiskGuard (serving) or by the evaluation (scoring).
"""

from dataclasses import dataclass

from app.domains.markets.candles import FloatArray
from app.domains.signals.features import FeatureMatrix
from app.domains.signals.labels import CLASSES
from app.domains.signals.regime import Regime, RegimeConfig, Strategy, apply_strategy, detect_regime


@dataclass(frozen=True, slots=True)
class Decision:
    side: str  # LONG / SHORT / HOLD
    confidence: float
    regime: Regime
    strategy: Strategy


def decide(
    probabilities: FloatArray, features: FeatureMatrix, row: int, config: RegimeConfig | None = None
) -> Decision:
    """The served call at `row` from that row's probabilities (in `CLASSES` order) and earlier features only."""
    best = int(probabilities.argmax())
    regime = detect_regime(features, row, config)
    side, confidence, strategy = apply_strategy(
        regime, CLASSES[best], float(probabilities[best]), features, row, config
    )
    return Decision(side, confidence, regime, strategy)
