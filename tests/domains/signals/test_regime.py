import numpy as np
import pytest

from app.domains.markets.candles import Candles
from app.domains.signals.features import compute_features
from app.domains.signals.regime import (
    Regime,
    RegimeConfig,
    Strategy,
    apply_strategy,
    detect_regime,
    detect_regimes,
    volatility_ratios,
)


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


def test_the_vectorised_regime_is_the_row_rule_at_every_row(btc_candles: Candles) -> None:
    """`detect_regimes` over many rows equals the rule read one row at a time from its definition: rvol_24 over the
    median of the defined rvol_24 of the 720 rows ending at the row (>= 24 of them), and ret_72 / (rvol_24 √72)."""
    features = compute_features(btc_candles)
    cfg = RegimeConfig()
    rvol, move = features.column("rvol_24"), features.column("ret_72")
    rows = range(0, len(btc_candles))
    got = detect_regimes(features, rows)
    ratios = volatility_ratios(features, rows)
    for row in range(0, len(btc_candles), 7):
        history = rvol[max(0, row - cfg.volatility_lookback + 1) : row + 1]
        history = history[np.isfinite(history)]
        expected_ratio = (
            rvol[row] / np.median(history) if history.size >= 24 and np.isfinite(rvol[row]) else float("nan")
        )
        assert ratios[row] == pytest.approx(expected_ratio, rel=1e-12, nan_ok=True), row
        t = move[row] / (rvol[row] * np.sqrt(72.0)) if rvol[row] > 0 else float("nan")
        if np.isfinite(expected_ratio) and expected_ratio > cfg.volatility_ratio:
            expected = Regime.VOLATILE
        elif np.isfinite(t) and abs(t) >= cfg.trend_t_stat:
            expected = Regime.TRENDING
        else:
            expected = Regime.RANGING
        assert got[row] is expected and detect_regime(features, row) is expected, row
    assert {Regime.VOLATILE, Regime.TRENDING, Regime.RANGING} <= set(got)
