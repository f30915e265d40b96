"""Triple-barrier labels: hand-computed cases, the exit plan's distances, no look-ahead, speed."""

import math
from decimal import Decimal

import numpy as np
import pytest

from app.domains.exits.plan import ExitConfig, ExitContext, PlanRefused, build_plan
from app.domains.markets.candles import Candles
from app.domains.signals.barriers import (
    NO_EXIT,
    SL,
    TIMEOUT,
    TP,
    UNKNOWN,
    BarrierConfig,
    barrier_distances,
    exit_plan_labels,
    mean_true_range,
    triple_barrier_labels,
)
from app.domains.signals.features import compute_features
from app.domains.signals.regime import detect_regime

HOUR_MS = 3_600_000


def make_candles(ohlc: list[tuple[float, float, float, float]]) -> Candles:
    rows = np.asarray(ohlc, dtype=np.float64)
    n = len(rows)
    return Candles(
        "TEST/USDT:USDT",
        "1h",
        np.arange(n, dtype=np.int64) * HOUR_MS,
        rows[:, 0].copy(),
        rows[:, 1].copy(),
        rows[:, 2].copy(),
        rows[:, 3].copy(),
        np.ones(n),
    )


FLAT = (100.0, 100.5, 99.5, 100.0)  # never reaches +2 % / -1 % from an entry at 100


def label_row0(
    bars: list[tuple[float, float, float, float]], side: int = 1, hold: int = 3
) -> tuple[float, int, int, float]:
    """Row 0 proposes `side`; entry at bars[0]'s open (candle 1); TP +2 %, SL -1 %."""
    candles = make_candles([FLAT, *bars, *([FLAT] * 5)])
    sides = np.zeros(len(candles), dtype=np.int64)
    sides[0] = side
    out = triple_barrier_labels(candles, sides, tp_pct=0.02, sl_pct=0.01, max_hold_bars=hold)
    return float(out.label[0]), int(out.outcome[0]), int(out.exit_bar[0]), float(out.exit_return[0])


def test_take_profit_first() -> None:
    bars = [(100.0, 101.0, 99.5, 100.5), (100.5, 102.5, 100.0, 102.0)]
    assert label_row0(bars) == (1.0, TP, 2, pytest.approx(0.02))


def test_stop_first() -> None:
    bars = [(100.0, 100.5, 98.9, 99.2), (99.2, 103.0, 99.1, 102.0)]  # stop in candle 1, TP only later
    assert label_row0(bars) == (0.0, SL, 1, pytest.approx(-0.01))


def test_both_barriers_in_one_candle_is_the_stop() -> None:
    bars = [(100.0, 100.5, 99.5, 100.0), (100.0, 102.5, 98.5, 101.0)]
    assert label_row0(bars) == (0.0, SL, 2, pytest.approx(-0.01))


def test_timeout_is_a_miss_and_exits_at_the_last_close() -> None:
    bars = [(100.0, 101.0, 99.5, 100.5), (100.5, 101.5, 99.6, 101.0), (101.0, 101.9, 99.2, 101.4)]
    assert label_row0(bars, hold=3) == (0.0, TIMEOUT, 3, pytest.approx(0.014))
    # one bar more of holding time and the same path reaches TP in candle 4
    later = [*bars, (101.4, 102.1, 101.0, 102.0)]
    assert label_row0(later, hold=4)[:3] == (1.0, TP, 4)


def test_short_mirrors_long() -> None:
    tp_bars = [(100.0, 100.5, 98.9, 99.0), (99.0, 99.5, 97.9, 98.0)]  # -2.1 %: a short's take-profit
    assert label_row0(tp_bars, side=-1) == (1.0, TP, 2, pytest.approx(0.02))
    sl_bars = [(100.0, 101.1, 99.5, 101.0)]  # +1.1 %: a short's stop
    assert label_row0(sl_bars, side=-1) == (0.0, SL, 1, pytest.approx(-0.01))
    both = [(100.0, 101.5, 97.5, 98.0)]
    assert label_row0(both, side=-1)[:2] == (0.0, SL)


def test_gap_through_a_barrier_at_the_open() -> None:
    # candle 2 opens at 97, below the stop at 99: stopped there, filled at the open (-3 %), not at the stop
    gap_down = [(100.0, 100.5, 99.5, 99.8), (97.0, 98.0, 96.5, 97.5)]
    assert label_row0(gap_down) == (0.0, SL, 2, pytest.approx(-0.03))
    # candle 2 opens at 103, above TP at 102: the take-profit (filled at its trigger, as the paper exchange)
    gap_up = [(100.0, 100.5, 99.5, 100.2), (103.0, 103.5, 102.5, 103.0)]
    assert label_row0(gap_up) == (1.0, TP, 2, pytest.approx(0.02))
    # a short gapped through its stop
    assert label_row0([(100.0, 100.5, 99.5, 100.2), (102.0, 102.5, 101.5, 102.0)], side=-1) == (
        0.0,
        SL,
        2,
        pytest.approx(-0.02),
    )


def test_horizon_past_the_data_and_no_side_are_unknown() -> None:
    candles = make_candles([FLAT] * 10)
    sides = np.ones(10, dtype=np.int64)
    sides[3] = 0
    out = triple_barrier_labels(candles, sides, tp_pct=0.02, sl_pct=0.01, max_hold_bars=4)
    # row t needs candles t+1..t+4: rows 6..9 run past the last candle (9)
    assert np.isnan(out.label[6:]).all()
    assert (out.outcome[6:] == UNKNOWN).all() and (out.exit_bar[6:] == NO_EXIT).all()
    assert np.isnan(out.label[3]) and out.outcome[3] == UNKNOWN
    assert (out.outcome[[0, 1, 2, 4, 5]] == TIMEOUT).all()
    assert out.exit_bar[5] == 9
    assert out.known.sum() == 5


def test_unknown_even_when_a_barrier_is_hit_before_the_data_ends() -> None:
    candles = make_candles([FLAT, FLAT, (100.0, 103.0, 99.9, 102.5)])
    out = triple_barrier_labels(candles, np.array([1, 0, 0]), tp_pct=0.02, sl_pct=0.01, max_hold_bars=3)
    assert np.isnan(out.label[0])  # TP is hit in candle 2, but the window (candles 1..3) is not complete


def test_rejects_bad_inputs() -> None:
    candles = make_candles([FLAT] * 5)
    with pytest.raises(ValueError):
        triple_barrier_labels(candles, np.array([2, 0, 0, 0, 0]), tp_pct=0.02, sl_pct=0.01, max_hold_bars=2)
    with pytest.raises(ValueError):
        triple_barrier_labels(candles, np.zeros(4), tp_pct=0.02, sl_pct=0.01, max_hold_bars=2)
    with pytest.raises(ValueError):
        triple_barrier_labels(candles, np.zeros(5), tp_pct=-0.02, sl_pct=0.01, max_hold_bars=2)
    with pytest.raises(ValueError):
        triple_barrier_labels(candles, np.zeros(5), tp_pct=0.02, sl_pct=0.01, max_hold_bars=0)


def random_walk(n: int, seed: int = 0) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, 0.001, n))
    wick = np.abs(rng.normal(0.0, 0.004, (n, 2)))
    high = np.maximum(open_, close) * (1 + wick[:, 0])
    low = np.minimum(open_, close) * (1 - wick[:, 1])
    return Candles("RW/USDT:USDT", "1h", np.arange(n, dtype=np.int64) * HOUR_MS, open_, high, low, close, np.ones(n))


def test_static_distances_are_the_exit_plans_defaults() -> None:
    candles = random_walk(50)
    tp, sl = barrier_distances(candles, BarrierConfig(volatility_scaled=False))
    cfg = ExitConfig()
    assert (tp == cfg.tp_distances[0]).all() and (sl == cfg.sl_distance).all()
    custom = ExitConfig(tp_distances=(0.01, 0.02, 0.03), sl_distance=0.005)
    tp, sl = barrier_distances(candles, BarrierConfig(volatility_scaled=False, exit=custom, stop_scale=1.5))
    assert (tp == 0.01).all() and (sl == pytest.approx(0.0075))


def test_volatility_scaled_distances_follow_the_plans_atr_multiples() -> None:
    candles = random_walk(60, seed=3)
    atr = mean_true_range(candles, 14)
    assert np.isnan(atr[:14]).all() and np.isfinite(atr[14:]).all()
    t = 30  # hand-computed ATR: the mean of the 14 true ranges of candles 17..30
    ranges = [
        max(
            candles.high[i] - candles.low[i],
            abs(candles.high[i] - candles.close[i - 1]),
            abs(candles.low[i] - candles.close[i - 1]),
        )
        for i in range(t - 13, t + 1)
    ]
    assert atr[t] == pytest.approx(np.mean(ranges))
    tp, sl = barrier_distances(candles, BarrierConfig(regime_scaled=False))
    cfg = ExitConfig()
    vol = atr[t] / candles.open[t + 1]
    assert tp[t] == pytest.approx(max(cfg.atr_tp_multiples[0] * vol, cfg.min_distance))
    assert sl[t] == pytest.approx(max(cfg.atr_sl_multiple * vol, cfg.min_distance))
    assert np.isnan(tp[-1])  # no next open to enter at
    floored = barrier_distances(candles, BarrierConfig(exit=ExitConfig(min_distance=0.5)))
    assert (floored[0][14:-1] == 0.5).all()


def test_the_distances_are_the_live_exit_plans_for_the_atr_and_regime_at_the_decision(btc_candles: Candles) -> None:
    """One rule: at every sampled decision the label's TP1/SL are the distances `build_plan` gives a position
    entered at the next open with the ATR of the candles closed at t and the regime read at t."""
    candles = btc_candles.slice(0, 1500)
    features = compute_features(candles)
    tp, sl = barrier_distances(candles, BarrierConfig(), features)
    atr = mean_true_range(candles, BarrierConfig().atr_bars)
    regimes = set()
    for t in range(800, 1490, 23):
        regime = detect_regime(features, t).value
        regimes.add(regime)
        entry = Decimal(repr(float(candles.open[t + 1])))
        context = ExitContext(
            "LONG", entry, Decimal("0.01"), 2, "BTC/USDT:USDT", atr=Decimal(repr(float(atr[t]))), regime=regime
        )
        plan = build_plan(context)
        assert not isinstance(plan, PlanRefused), plan
        tp1 = float(plan.take_profits[0].trigger_price / entry - 1)
        stop = float(1 - plan.stop_loss.trigger_price / entry)
        tick = 0.1 / float(entry)  # the plan rounds its prices to the market's tick
        assert abs(tp[t] - tp1) <= tick and abs(sl[t] - stop) <= tick, (t, regime)
    assert len(regimes) >= 2  # the scale is exercised, not only one regime


@pytest.mark.parametrize("scaled", [False, True])
def test_labels_at_t_depend_only_on_the_holding_window(scaled: bool) -> None:
    """Perturb every candle after t + max_hold: labels at t and before do not move."""
    n, hold, t = 400, 12, 250
    candles = random_walk(n, seed=5)
    sides = np.random.default_rng(6).choice([-1, 0, 1], size=n)
    cfg = BarrierConfig(max_hold_bars=hold, volatility_scaled=scaled)
    base = exit_plan_labels(candles, sides, cfg)
    rng = np.random.default_rng(7)
    after = t + hold + 1
    bumped = [np.array(a, copy=True) for a in (candles.open, candles.high, candles.low, candles.close)]
    shock = np.exp(rng.normal(0.0, 0.05, n - after))
    for a in bumped:
        a[after:] *= shock
    perturbed = Candles(candles.symbol, "1h", candles.timestamp, *bumped, candles.volume)
    moved = exit_plan_labels(perturbed, sides, cfg)
    np.testing.assert_array_equal(base.label[: t + 1], moved.label[: t + 1])
    np.testing.assert_array_equal(base.exit_bar[: t + 1], moved.exit_bar[: t + 1])
    assert (base.exit_bar[: t + 1] <= t + hold).all()
    assert not np.array_equal(base.label[after:], moved.label[after:], equal_nan=True)
    if not scaled:
        # static barriers: the past does not matter either, only candles t+1 .. t+hold
        past = [np.array(a, copy=True) for a in (candles.open, candles.high, candles.low, candles.close)]
        for a in past:
            a[: t + 1] *= 1.3
        shifted = Candles(candles.symbol, "1h", candles.timestamp, *past, candles.volume)
        assert exit_plan_labels(shifted, sides, cfg).label[t] == base.label[t] or np.isnan(base.label[t])


def test_fifty_thousand_candles_are_all_labelled_past_the_warm_up() -> None:
    """The labelling is vectorised (its speed is in the signals bench's training figures, not timed here)."""
    candles = random_walk(50_000, seed=11)
    sides = np.random.default_rng(12).choice([-1, 1], size=50_000)
    out = exit_plan_labels(candles, sides, BarrierConfig(max_hold_bars=48))
    assert out.known.sum() == 50_000 - 14 - 48


def reference(candles: Candles, t: int, side: int, tp: float, sl: float, hold: int) -> tuple[float, int]:
    """The label of row t walked candle by candle, as a trader would read the chart."""
    if side == 0 or t + hold > len(candles) - 1 or not (np.isfinite(tp) and np.isfinite(sl)):
        return math.nan, NO_EXIT
    entry = candles.open[t + 1]
    tp_price, sl_price = entry * (1 + side * tp), entry * (1 - side * sl)
    for k in range(t + 1, t + hold + 1):
        high, low = candles.high[k], candles.low[k]
        stop = low <= sl_price if side > 0 else high >= sl_price
        take = high >= tp_price if side > 0 else low <= tp_price
        if stop:
            return 0.0, k
        if take:
            return 1.0, k
    return 0.0, t + hold


@pytest.mark.parametrize("scaled", [False, True])
def test_real_candles_match_a_candle_by_candle_walk(btc_candles: Candles, scaled: bool) -> None:
    rng = np.random.default_rng(21)
    sides = rng.choice([-1, 0, 1], size=len(btc_candles))
    cfg = BarrierConfig(max_hold_bars=24, volatility_scaled=scaled)
    out = exit_plan_labels(btc_candles, sides, cfg)
    tp, sl = barrier_distances(btc_candles, cfg)
    for t in rng.choice(len(btc_candles), size=600, replace=False):
        expected = reference(btc_candles, int(t), int(sides[t]), float(tp[t]), float(sl[t]), 24)
        assert (out.label[t], out.exit_bar[t]) == pytest.approx(expected, nan_ok=True), t
    known = out.known
    assert 0.3 < out.label[known].mean() < 0.6
    shares = [(out.outcome[known] == o).mean() for o in (TP, SL, TIMEOUT)]
    assert sum(shares) == pytest.approx(1.0) and min(shares) > 0.02
