import numpy as np

from app.domains.markets.candles import Candles
from app.domains.signals.features import compute_features
from app.domains.signals.regime import Regime, Strategy, apply_strategy, detect_regime


def walk(drift: float, vol: np.ndarray, seed: int = 1) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + vol * rng.normal(size=vol.size)))
    open_ = np.r_[close[0], close[:-1]]
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    ts = np.arange(vol.size, dtype=np.int64) * 3_600_000
    return Candles("X/USDT:USDT", "1h", ts, open_, high, low, close, np.full(vol.size, 1000.0))


def test_trend_range_and_volatility_are_told_apart() -> None:
    calm = np.full(1200, 0.002)
    assert detect_regime(compute_features(walk(0.002, calm)), 1199) is Regime.TRENDING
    assert detect_regime(compute_features(walk(0.0, calm)), 1199) is Regime.RANGING
    shock = calm.copy()
    shock[-30:] = 0.02
    assert detect_regime(compute_features(walk(0.0, shock)), 1199) is Regime.VOLATILE


def test_strategy_per_regime() -> None:
    features = compute_features(walk(0.0, np.full(400, 0.002)))
    assert apply_strategy(Regime.TRENDING, "LONG", 0.6, features, 399)[::2] == ("LONG", Strategy.TREND_FOLLOWING)
    assert apply_strategy(Regime.VOLATILE, "LONG", 0.6, features, 399)[0] == "HOLD"
    assert apply_strategy(Regime.VOLATILE, "LONG", 0.8, features, 399)[0] == "LONG"
