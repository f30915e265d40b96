"""Features use candles <= t only: perturbing the future changes nothing up to t."""

from dataclasses import replace

import numpy as np
import pytest
import talib

from app.domains.markets.candles import Candles, Funding
from app.domains.signals.features import FEATURES, WARMUP, compute_features, funding_as_of


def perturb_after(candles: Candles, t: int, seed: int) -> Candles:
    """Candles whose rows after t are replaced by a different, still valid, random walk."""
    rng = np.random.default_rng(seed)
    n = len(candles) - t - 1
    factor = np.exp(np.cumsum(rng.normal(0, 0.05, n)))
    close = candles.close.copy()
    close[t + 1 :] = close[t] * factor
    open_ = candles.open.copy()
    open_[t + 1 :] = np.r_[close[t], close[t + 1 : -1]]
    high = candles.high.copy()
    low = candles.low.copy()
    high[t + 1 :] = np.maximum(open_[t + 1 :], close[t + 1 :]) * 1.01
    low[t + 1 :] = np.minimum(open_[t + 1 :], close[t + 1 :]) * 0.99
    volume = candles.volume.copy()
    volume[t + 1 :] = rng.uniform(0, 1e5, n)
    return replace(candles, open=open_, high=high, low=low, close=close, volume=volume)


@pytest.mark.parametrize("t", [WARMUP + 5, 1000, 2500, 4998])
def test_perturbing_the_future_changes_nothing_up_to_t(btc_candles: Candles, btc_funding: Funding, t: int) -> None:
    base = compute_features(btc_candles, btc_funding)
    changed_candles = perturb_after(btc_candles, t, seed=t)
    cutoff = btc_candles.timestamp[t] + 3_600_000
    later = btc_funding.timestamp > cutoff
    changed_funding = replace(btc_funding, rate=np.where(later, btc_funding.rate + 0.01, btc_funding.rate))
    changed = compute_features(changed_candles, changed_funding)
    np.testing.assert_array_equal(base.values[: t + 1], changed.values[: t + 1])
    np.testing.assert_array_equal(base.valid[: t + 1], changed.valid[: t + 1])
    assert not np.array_equal(base.values[t + 1 :], changed.values[t + 1 :])  # the perturbation did something


def test_online_features_equal_the_batch_computation(btc_candles: Candles, btc_funding: Funding) -> None:
    batch = compute_features(btc_candles, btc_funding)
    for t in (300, 2000, 4999):
        online = compute_features(btc_candles.slice(0, t + 1), btc_funding)
        np.testing.assert_allclose(online.values[-1], batch.values[t], rtol=0, atol=1e-12)


def test_feature_columns_and_warmup(btc_candles: Candles, btc_funding: Funding) -> None:
    features = compute_features(btc_candles, btc_funding)
    assert features.values.shape == (len(btc_candles), len(FEATURES))
    assert not features.valid[:WARMUP].any()
    assert features.valid[WARMUP:].all()
    assert np.isfinite(features.values[features.valid]).all()
    rsi = features.column("rsi_14")[features.valid]
    assert rsi.min() >= 0 and rsi.max() <= 1
    np.testing.assert_allclose(features.column("rsi_14"), talib.RSI(btc_candles.close, 14) / 100, equal_nan=True)
    expected_ret_24 = np.log(btc_candles.close[24:] / btc_candles.close[:-24])
    np.testing.assert_allclose(features.column("ret_24")[24:], expected_ret_24, rtol=1e-12)


def test_funding_is_known_from_its_settlement_on() -> None:
    hour = 3_600_000
    timestamps = np.arange(0, 10 * hour, hour, dtype=np.int64)
    flat = np.ones(10)
    candles = Candles("X/USDT:USDT", "1h", timestamps, flat, flat, flat, flat, flat)
    funding = Funding("X/USDT:USDT", np.array([2 * hour, 8 * hour], dtype=np.int64), np.array([0.001, -0.002]))
    rates = funding_as_of(candles, funding)
    # the candle opened at 1h closes at 2h, when the first settlement happens
    np.testing.assert_array_equal(rates[:1], [np.nan])
    np.testing.assert_array_equal(rates[1:7], [0.001] * 6)
    np.testing.assert_array_equal(rates[7:], [-0.002] * 3)
    assert np.isnan(funding_as_of(candles, None)).all()
