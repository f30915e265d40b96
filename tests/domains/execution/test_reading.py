"""The exit side's market reading on real BTC candles: the signals' regime rule at each bar, the bias from the
sign of the drift t-statistic, and nothing read from a bar after the one read (perturb-the-future)."""

from decimal import Decimal

import numpy as np

from app.domains.execution.paper import Bar
from app.domains.execution.reading import READING_BARS, read_market
from app.domains.exits.harvest import Bias
from app.domains.markets.marketdata import ReplayMarketData, default_data_root
from app.domains.signals.features import compute_features
from app.domains.signals.regime import RegimeConfig, detect_regime, drift_t_stat

BTC = "BTC/USDT:USDT"


def real_bars(count: int) -> list[Bar]:
    path = default_data_root() / "BTC_USDT_USDT-1h-futures.csv.gz"
    candles = ReplayMarketData.load_candles_file(path, BTC, "1h").slice(24, 24 + count)
    columns = (candles.open, candles.high, candles.low, candles.close)
    return [
        Bar(BTC, int(candles.timestamp[i]), *(Decimal(repr(float(c[i]))) for c in columns)) for i in range(len(candles))
    ]


def test_readings_follow_the_signals_regime_rule() -> None:
    bars = real_bars(READING_BARS + 2000)
    at = [b.open_ms for b in bars[READING_BARS:]]
    readings = read_market(BTC, bars, at)
    assert set(readings) == set(at)
    from app.domains.markets.candles import Candles

    candles = Candles(
        BTC,
        "1h",
        np.array([b.open_ms for b in bars], dtype=np.int64),
        *(np.array([float(getattr(b, f)) for b in bars]) for f in ("open", "high", "low", "close")),
        np.zeros(len(bars)),
    )
    features = compute_features(candles)
    threshold = RegimeConfig().trend_t_stat
    biases = set()
    for row, open_ms in enumerate(at, start=READING_BARS):
        reading = readings[open_ms]
        t = drift_t_stat(features, row)
        assert reading.regime is detect_regime(features, row)
        assert reading.trend_strength == abs(t)
        expected = Bias.BULLISH if t >= threshold else Bias.BEARISH if t <= -threshold else Bias.NEUTRAL
        assert reading.bias is expected
        biases.add(reading.bias)
    assert biases == {Bias.BULLISH, Bias.NEUTRAL, Bias.BEARISH}  # the real data visits every bias


def test_a_reading_never_sees_a_later_bar() -> None:
    bars = real_bars(READING_BARS + 200)
    t_index = READING_BARS + 100
    at = bars[t_index].open_ms
    before = read_market(BTC, bars, [at])[at]
    rng = np.random.default_rng(7)
    perturbed = bars[: t_index + 1] + [
        Bar(BTC, b.open_ms, b.open * f, b.high * f * 2, b.low * f / 2, b.close * f)
        for b, f in ((b, Decimal(repr(float(rng.uniform(0.5, 1.5))))) for b in bars[t_index + 1 :])
    ]
    assert read_market(BTC, perturbed, [at])[at] == before
    b = bars[t_index]
    moved = Bar(BTC, at, b.open, b.high * 2, b.low, b.close * Decimal("1.2"))
    changed = [*bars[:t_index], moved, *bars[t_index + 1 :]]
    assert read_market(BTC, changed, [at])[at] != before  # the bar read itself does count


def test_too_little_history_gives_no_reading() -> None:
    bars = real_bars(90)
    assert read_market(BTC, bars, [bars[-1].open_ms]) == {}
