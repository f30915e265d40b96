"""The momentum fallback: exact rule, and every signal says where it came from."""

import numpy as np
import pytest

from app.domains.markets.candles import Candles
from app.domains.signals.fallback import SOURCE, NotEnoughHistory, momentum_signal


def hourly(closes: list[float]) -> Candles:
    c = np.array(closes)
    ts = np.arange(len(c), dtype=np.int64) * 3_600_000
    return Candles("BTC/USDT:USDT", "1h", ts, c, c, c, c, np.ones_like(c))


@pytest.mark.parametrize(
    "last,side,confidence",
    [
        (105.0, "LONG", 0.6),
        (101.0, "HOLD", 0.52),
        (100.5, "HOLD", 0.51),
        (98.0, "SHORT", 0.54),
        (50.0, "SHORT", 0.95),
        (130.0, "LONG", 0.95),
    ],
)
def test_rule(last: float, side: str, confidence: float) -> None:
    signal = momentum_signal(hourly([100.0] * 24 + [last]))
    assert (signal.side, signal.source) == (side, SOURCE)
    assert signal.confidence == pytest.approx(confidence)


def test_needs_24_hours() -> None:
    with pytest.raises(NotEnoughHistory):
        momentum_signal(hourly([100.0] * 24))
