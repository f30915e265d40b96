"""Meta-labelling: purged splits, honest calibration, skill only where there is some, saved without pickle."""

import itertools
import math
import pickletools
from pathlib import Path

import numpy as np
import pytest

from app.domains.learning.evaluation import reliability_table
from app.domains.learning.meta_report import run
from app.domains.learning.training import walk_forward_meta
from app.domains.markets.candles import Candles
from app.domains.signals.barriers import BarrierConfig
from app.domains.signals.features import FEATURES, compute_features
from app.domains.signals.meta import (
    MetaConfig,
    MetaModel,
    MetaRows,
    average_uniqueness,
    fit_calibration,
    fit_meta,
    meta_inputs,
    meta_rows,
    purged_train_mask,
    purged_walk_forward_splits,
    sides_from_probabilities,
    time_slices,
)

HOUR_MS = 3_600_000


def synthetic_rows(n: int, *, skill: bool, seed: int = 0) -> MetaRows:
    """Hourly rows whose windows last 1..24 h. With `skill`, P(TP first) depends on the side times a feature
    and on the primary's probability of the side; without, it is a constant 0.42."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, len(FEATURES)))
    probs = rng.dirichlet([2.0, 2.0, 2.0], size=n)
    sides = rng.choice([-1, 1], size=n)
    p_side = np.where(sides > 0, probs[:, 2], probs[:, 0])
    if skill:
        truth = 1 / (1 + np.exp(-(-0.3 + 1.0 * sides * features[:, 0] + 0.6 * features[:, 1] + 2.0 * (p_side - 0.33))))
    else:
        truth = np.full(n, 0.42)
    label = (rng.random(n) < truth).astype(np.float64)
    timestamp = np.arange(n, dtype=np.int64) * HOUR_MS
    end = timestamp + rng.integers(1, 25, size=n) * HOUR_MS
    return MetaRows(timestamp, end, features, probs, sides.astype(np.int64), label, np.zeros(n, dtype=np.int64))


FAST = MetaConfig(n_rounds=300, learning_rate=0.05, min_child_samples=100)


# --- splits -------------------------------------------------------------------------------------------------


def random_windows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    start = np.sort(rng.integers(0, 5000, size=n)).astype(np.int64) * HOUR_MS
    end = start + rng.integers(1, 49, size=n) * HOUR_MS
    return start, end


def test_walk_forward_training_windows_never_overlap_the_test_fold() -> None:
    start, end = random_windows(4000)
    splits = purged_walk_forward_splits(start, end, n_folds=4, test_fraction=0.4, embargo_ms=24 * HOUR_MS)
    assert len(splits) == 4
    for split in splits:
        lo, hi = start[split.test].min(), end[split.test].max()
        train_start, train_end = start[split.train], end[split.train]
        assert not ((train_start <= hi) & (train_end >= lo)).any()  # no barrier window overlaps the test span
        assert (train_end < lo).all()  # walk-forward: training labels are all known before the test starts
        # and nothing purged that did not have to be: every earlier row whose window ends before the test is used
        earlier = np.flatnonzero(end < lo)
        np.testing.assert_array_equal(split.train, earlier)


def test_purging_and_embargo_around_a_test_fold_in_the_middle() -> None:
    start, end = random_windows(3000, seed=1)
    test = (start >= 2000 * HOUR_MS) & (start < 2500 * HOUR_MS)
    embargo = 72 * HOUR_MS
    train = purged_train_mask(start, end, test, embargo)
    lo, hi = start[test].min(), end[test].max()
    assert not (train & test).any()
    assert not (train & (start <= hi) & (end >= lo)).any()
    assert not (train & (start > hi) & (start <= hi + embargo)).any()  # embargoed after the fold
    assert (train == ~test & ((end < lo) | (start > hi + embargo))).all()


def test_time_slices_are_purged_and_embargoed() -> None:
    start, end = random_windows(5000, seed=2)
    embargo = 24 * HOUR_MS
    slices = time_slices(start, end, (0.6, 0.2, 0.2), embargo)
    assert all(len(s) > 500 for s in slices)
    for earlier, later in itertools.pairwise(slices):
        assert end[earlier].max() + embargo < start[later].min()
    with pytest.raises(ValueError):
        time_slices(start, end, (0.5, 0.2), embargo)


def test_average_uniqueness_by_hand() -> None:
    # A holds candles 1..3, B candles 2..4 (concurrency 1, 2, 2, 1); C, another symbol, alone; D inside A and B
    start = np.array([0, 1, 0, 1], dtype=np.int64) * HOUR_MS
    end = np.array([3, 4, 2, 2], dtype=np.int64) * HOUR_MS
    group = np.array([0, 0, 1, 0], dtype=np.int64)
    unique = average_uniqueness(start, end, group)
    # with D, candle 2 has concurrency 3: A = (1 + 1/3 + 1/2) / 3, B = (1/3 + 1/2 + 1) / 3, D = 1/3
    np.testing.assert_allclose(unique, [(1 + 1 / 3 + 1 / 2) / 3, (1 / 3 + 1 / 2 + 1) / 3, 1.0, 1 / 3])
    alone = average_uniqueness(start[:2], end[:2], group[:2])
    np.testing.assert_allclose(alone, [2 / 3, 2 / 3])


# --- scores -------------------------------------------------------------------------------------------------


def test_reliability_table_by_hand() -> None:
    p = np.array([0.1, 0.15, 0.9, 0.95])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    table = reliability_table(p, y, n_bins=2, base_rate=0.5)
    assert [b.count for b in table.bins] == [2, 2]
    assert table.bins[0].predicted_mean == pytest.approx(0.125) and table.bins[0].observed_frequency == 0.5
    assert table.bins[1].predicted_mean == pytest.approx(0.925) and table.bins[1].observed_frequency == 1.0
    assert table.brier == pytest.approx((0.01 + 0.85**2 + 0.01 + 0.05**2) / 4)
    expected = -(math.log(0.9) + math.log(0.15) + math.log(0.9) + math.log(0.95)) / 4
    assert table.log_loss == pytest.approx(expected)
    assert table.base_brier == pytest.approx(0.25) and table.base_log_loss == pytest.approx(math.log(2))
    assert table.brier_skill == pytest.approx(1 - table.brier / 0.25)
    assert "observed" in table.format()
    assert reliability_table(p, y).base_rate == 0.75  # without a training base rate: the observed frequency


def test_inputs_and_sides() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    assert sides_from_probabilities(probs).tolist() == [-1, 0, 1]
    x = meta_inputs(np.zeros((3, 2)), probs, [-1, 0, 1])
    assert x.shape == (3, 2 + 5)
    np.testing.assert_array_equal(x[:, 5], [-1, 0, 1])
    assert x[0, 6] == 0.6 and np.isnan(x[1, 6]) and x[2, 6] == 0.7


# --- calibration --------------------------------------------------------------------------------------------


def calibration_data(n: int, true_slope: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.2, 0.6, n)
    raw = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < 1 / (1 + np.exp(-true_slope * z))).astype(np.float64)
    start = np.arange(n, dtype=np.int64) * HOUR_MS
    return raw, y, start, start + 12 * HOUR_MS


def test_sharpening_only_where_it_wins_on_held_out_folds() -> None:
    raw, y, start, end = calibration_data(8000, true_slope=1.0)
    calibrated = fit_calibration(raw, y, start, end, folds=4, embargo_ms=24 * HOUR_MS)
    assert not calibrated.sharpened and calibrated.temperature >= 1.0
    raw, y, start, end = calibration_data(8000, true_slope=2.5, seed=1)  # an underconfident score
    sharpened = fit_calibration(raw, y, start, end, folds=4, embargo_ms=24 * HOUR_MS)
    assert sharpened.sharpened and sharpened.temperature < 0.6
    assert all(f["sharpened_log_loss"] < f["soft_log_loss"] for f in sharpened.evidence["folds"])


def test_an_overconfident_score_is_softened() -> None:
    raw, y, start, end = calibration_data(8000, true_slope=0.4, seed=2)
    calibration = fit_calibration(raw, y, start, end)
    assert not calibration.sharpened
    assert calibration.temperature == pytest.approx(2.5, rel=0.25)


# --- the model ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skilled() -> tuple[MetaRows, MetaModel]:
    rows = synthetic_rows(12_000, skill=True)
    return rows, fit_meta(rows, FAST, barriers=BarrierConfig())


def test_beats_the_base_rate_out_of_sample() -> None:
    rows = synthetic_rows(16_000, skill=True, seed=3)
    result = walk_forward_meta(rows, n_folds=2, test_fraction=0.3, config=FAST)
    table = result.reliability()
    assert table.count > 4000
    assert table.brier < 0.9 * table.base_brier
    assert table.log_loss < table.base_log_loss - 0.05
    # calibrated on data the trees did not see: held-out predictions match held-out frequencies
    assert abs(table.predicted_mean - table.observed_frequency) < 0.02
    for b in table.bins:
        if b.count >= 400:
            assert abs(b.predicted_mean - b.observed_frequency) < 0.05, b


def test_claims_no_skill_on_noise() -> None:
    rows = synthetic_rows(16_000, skill=False, seed=4)
    result = walk_forward_meta(rows, n_folds=2, test_fraction=0.3, config=FAST)
    table = result.reliability()
    assert table.brier <= table.base_brier + 0.002
    assert table.log_loss <= table.base_log_loss + 0.005
    assert float(np.std(result.predicted)) < 0.03  # it does not pretend to tell the rows apart
    assert abs(table.predicted_mean - 0.42) < 0.03


def test_fit_report_and_slices(skilled: tuple[MetaRows, MetaModel]) -> None:
    rows, model = skilled
    report = model.report
    assert report["rows"]["fit"] + report["rows"]["early_stop"] + report["rows"]["calibration"] < len(rows)
    assert report["early_stop_log_loss"] < report["early_stop_base_log_loss"]
    assert 0 < report["best_iteration"] <= FAST.n_rounds
    assert model.barriers["tp1_distance"] == BarrierConfig().exit.tp_distances[0]
    assert not model.calibration.sharpened or "won" in model.calibration.evidence["choice"]


def test_no_side_no_probability(skilled: tuple[MetaRows, MetaModel]) -> None:
    rows, model = skilled
    sides = rows.sides[:10].copy()
    sides[3] = 0
    p = model.predict_proba(rows.features[:10], rows.primary_probs[:10], sides)
    assert np.isnan(p[3]) and np.isfinite(np.delete(p, 3)).all()
    assert ((p[np.isfinite(p)] > 0) & (p[np.isfinite(p)] < 1)).all()
    with pytest.raises(ValueError):
        model.predict_proba(rows.features[:10, :5], rows.primary_probs[:10], rows.sides[:10])


def test_save_load_identical_without_pickle(skilled: tuple[MetaRows, MetaModel], tmp_path: Path) -> None:
    rows, model = skilled
    saved = model.save(tmp_path)
    weights = Path(saved["weights"]).read_bytes()
    assert weights[:2] not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    with pytest.raises(Exception):  # noqa: B017 - any failure proves it is not a pickle stream
        pickletools.dis(weights[:64], annotate=0)
    loaded = MetaModel.load(tmp_path)
    args = (rows.features[:500], rows.primary_probs[:500], rows.sides[:500])
    np.testing.assert_array_equal(loaded.predict_proba(*args), model.predict_proba(*args))
    assert loaded.calibration == model.calibration and loaded.base_rate == model.base_rate
    assert loaded.barriers == model.barriers
    Path(saved["weights"]).write_bytes(weights.replace(b"tree", b"TREE", 1))
    with pytest.raises(ValueError, match="sha256"):
        MetaModel.load(tmp_path)


def test_too_few_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="too few"):
        fit_meta(synthetic_rows(200, skill=True), FAST)


# --- rows from candles: no look-ahead -----------------------------------------------------------------------


def random_candles(n: int, seed: int = 0) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.004, (n, 2)))
    high = np.maximum(open_, close) * (1 + wick[:, 0])
    low = np.minimum(open_, close) * (1 - wick[:, 1])
    volume = rng.lognormal(3.0, 0.5, n)
    return Candles("RW/USDT:USDT", "1h", np.arange(n, dtype=np.int64) * HOUR_MS, open_, high, low, close, volume)


def test_rows_at_t_do_not_see_the_future() -> None:
    """Perturb every candle after t: features of rows <= t do not move; labels move only for rows whose
    barrier window reaches past t."""
    n, t, hold = 600, 420, 12
    candles = random_candles(n)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([2.0, 2.0, 2.0], size=n)
    sides = rng.choice([-1, 0, 1], size=n)
    barriers = BarrierConfig(max_hold_bars=hold)
    base = meta_rows(candles, compute_features(candles), probs, sides, barriers)
    shock = np.exp(rng.normal(0.0, 0.03, n - t - 1))
    arrays = [np.array(a, copy=True) for a in (candles.open, candles.high, candles.low, candles.close)]
    for a in arrays:
        a[t + 1 :] *= shock
    volume = candles.volume.copy()
    volume[t + 1 :] *= 3.0
    perturbed = Candles(candles.symbol, "1h", candles.timestamp, *arrays, volume)
    moved = meta_rows(perturbed, compute_features(perturbed), probs, sides, barriers)
    t_ms = int(candles.timestamp[t])
    old, new = base.timestamp <= t_ms, moved.timestamp <= t_ms
    np.testing.assert_array_equal(base.timestamp[old], moved.timestamp[new])
    np.testing.assert_array_equal(base.features[old], moved.features[new])
    resolved = base.end_ms[old] <= t_ms  # the whole window before the perturbation
    np.testing.assert_array_equal(base.label[old][resolved], moved.label[new][resolved])
    assert (base.end_ms - base.timestamp <= hold * HOUR_MS).all()
    assert (base.sides != 0).all() and set(np.unique(base.label)) <= {0.0, 1.0}


def test_the_real_data_report_runs_out_of_sample(btc_candles: Candles) -> None:
    """A short run of `meta_report` on the bundled BTC candles (skipped without them): every figure from folds
    refitted on earlier rows only, the base rate from each fold's training rows."""
    out = run(["BTC/USDT:USDT"], years=0.75, n_folds=2)
    assert len(out["folds"]) == 2
    for fold in out["folds"]:
        assert fold["train_rows"] > 1000 and fold["test_rows"] > 500
    oos = out["out_of_sample"]
    assert oos["count"] == sum(f["test_rows"] for f in out["folds"])
    assert 0.3 < oos["base_rate"] < 0.6 and 0.3 < oos["predicted_mean"] < 0.6
    assert oos["brier"] < oos["base_brier"] + 0.01  # whatever its skill, it is not badly miscalibrated
