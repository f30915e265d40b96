"""The training run: a time split with embargo, four fitting slices that do not choose on each other, all four
models, out-of-sample predictions per walk-forward fold."""

import itertools
from dataclasses import replace

import numpy as np
import pytest

from app.domains.learning.dataset import SymbolRows, split_by_time, symbol_rows
from app.domains.learning.training import SLICES, fit_models, fitting_slices, predictions
from app.domains.markets.candles import Candles, Funding
from app.domains.signals.ensemble import Ensemble, forecast_to_probabilities
from app.domains.signals.models import MODEL_KINDS
from app.domains.signals.modelset import TrainedModels, TrainingConfig
from app.domains.signals.service import weighted_probabilities

HOUR = 3_600_000
CONFIG = TrainingConfig(torch_epochs=1, window=24)


@pytest.fixture(scope="module")
def rows(btc_candles: Candles, btc_funding: Funding) -> SymbolRows:
    return symbol_rows(btc_candles, btc_funding, CONFIG)


def test_rows_hold_the_steps_of_the_labelled_return(rows: SymbolRows) -> None:
    # windows end at their row: the last channel of each window is that row's own ret_1 feature
    np.testing.assert_array_equal(rows.windows[:, -1, 0], rows.x[:, 4])
    assert rows.target.shape == (len(rows.y), CONFIG.horizon)
    np.testing.assert_array_equal(rows.target[:, 0], rows.next_return)
    # the next step's return of row t is the next row's own return, where rows are consecutive hours
    consecutive = np.diff(rows.timestamp) == HOUR
    np.testing.assert_allclose(rows.target[:-1, 1][consecutive], rows.next_return[1:][consecutive])
    total = rows.target.sum(axis=1)
    assert ((total > CONFIG.band) == (rows.y == 2)).all() and ((total < -CONFIG.band) == (rows.y == 0)).all()


def test_fitting_slices_are_disjoint_time_ordered_and_embargoed(rows: SymbolRows) -> None:
    slices = fitting_slices(rows, CONFIG).named()
    assert list(slices) == list(SLICES)
    embargo, horizon = CONFIG.embargo_hours * HOUR, CONFIG.horizon * HOUR
    seen: set[int] = set()
    for name, index in slices.items():
        assert len(index) > 0, name
        assert not seen & set(index.tolist()), f"{name} overlaps an earlier slice"
        seen |= set(index.tolist())
        assert (np.diff(rows.timestamp[index]) >= 0).all()
    for (older, a), (newer, b) in itertools.pairwise(slices.items()):
        last_label_end = rows.timestamp[a].max() + horizon  # purged: no label of `older` reaches `newer`
        assert last_label_end + embargo < rows.timestamp[b].min(), f"{older} -> {newer}"
    shares = {name: len(index) / len(rows.y) for name, index in slices.items()}
    assert shares["early_stopping"] == pytest.approx(CONFIG.validation_fraction, abs=0.02)
    assert shares["weights"] == pytest.approx(CONFIG.weights_fraction, abs=0.02)
    assert shares["calibration"] == pytest.approx(CONFIG.calibration_fraction, abs=0.02)


def test_several_symbols_share_the_slice_boundaries(btc_candles: Candles, btc_funding: Funding) -> None:
    a = symbol_rows(btc_candles, btc_funding, CONFIG)
    b = symbol_rows(btc_candles.slice(500, len(btc_candles)), btc_funding, CONFIG)  # a shorter second "symbol"
    both, _ = split_by_time([a, b], int(a.timestamp[-1]) + 1, 0)
    slices = list(fitting_slices(both, CONFIG).named().values())
    for older, newer in itertools.pairwise(slices):
        assert (
            both.timestamp[older].max() + (CONFIG.horizon + CONFIG.embargo_hours) * HOUR < both.timestamp[newer].min()
        )
    assert set(both.group[slices[0]].tolist()) == {0, 1}


def test_too_few_rows_for_the_slices_is_an_error(rows: SymbolRows) -> None:
    few, _ = split_by_time([rows], int(rows.timestamp[40]), 0)
    with pytest.raises(ValueError, match="empty"):
        fitting_slices(few, CONFIG)


def test_invalid_shares_are_rejected() -> None:
    with pytest.raises(ValueError, match="shares"):
        TrainingConfig(validation_fraction=0.5, weights_fraction=0.3, calibration_fraction=0.2)


@pytest.fixture(scope="module")
def fitted(rows: SymbolRows) -> tuple[SymbolRows, SymbolRows, TrainedModels]:
    test_start = int(rows.timestamp[int(len(rows.timestamp) * 0.75)])
    train, test = split_by_time([rows], test_start, CONFIG.embargo_hours)
    assert train.timestamp.max() < test_start - CONFIG.embargo_hours * HOUR <= test.timestamp.min()
    return train, test, fit_models(train, CONFIG)


def test_train_and_predict_out_of_sample(fitted: tuple[SymbolRows, SymbolRows, TrainedModels]) -> None:
    train, test, trained = fitted
    assert set(trained.fit_seconds) == {*MODEL_KINDS, "ensemble"}
    weights = trained.ensemble.weights
    assert set(weights) == set(MODEL_KINDS) and all(w >= 0 for w in weights.values())
    info = trained.fit_info
    expected = fitting_slices(train, CONFIG).named()
    assert {name: s["rows"] for name, s in info["slices"].items()} == {n: len(i) for n, i in expected.items()}
    assert set(info["weights_slice_log_loss"]) == {*MODEL_KINDS, "prior"}
    assert set(info["stopping"]) == set(MODEL_KINDS)
    for kind in ("xgboost", "lightgbm"):  # refitted on fit + early-stopping rows with the rounds chosen there
        assert trained.gbm[kind].best_iteration == info["stopping"][kind]["best_iteration"]
    # the reported baseline: every training row's class frequencies (the newest, hardest prior to beat)
    np.testing.assert_allclose(trained.prior, np.bincount(train.y, minlength=3) / len(train.y))
    if trained.ensemble.usable:
        choice = trained.ensemble.evidence["choice"]
        assert trained.ensemble.temperature >= 1.0 or choice.startswith("sharpened"), choice
    # the forecasters predict σ per row: no constant error σ is fitted anywhere
    assert all(np.isnan(v) for v in trained.residual_std.values())
    out = predictions(trained, test)
    assert set(out) >= {*MODEL_KINDS, "prior"}
    for name, p in out.items():
        assert p.shape == (len(test.y), 3), name
        np.testing.assert_allclose(p.sum(axis=1), 1.0, err_msg=name)
    for kind in ("nhits", "patchtst"):
        sigma = trained.forecasters[kind].predict(test.windows)[:, 1]
        assert sigma.std() > 0, f"{kind}: σ should vary with the row"


def test_served_member_probabilities_equal_the_trained_ones(
    fitted: tuple[SymbolRows, SymbolRows, TrainedModels],
) -> None:
    """The service's own call (`forecast_to_probabilities(forecaster.predict(w), residual_std[kind], band)`)
    reads the per-row σ exactly as training does."""
    _, test, trained = fitted
    trained = replace(trained, ensemble=Ensemble(dict.fromkeys(MODEL_KINDS, 0.25)))
    x, w = test.x[-50:], test.windows[-50:]
    served = weighted_probabilities(trained, x, w)
    mine = trained.probabilities(x, w)
    assert set(served) == set(MODEL_KINDS)
    for kind in MODEL_KINDS:
        np.testing.assert_array_equal(served[kind], mine[kind], err_msg=kind)
    forecast = trained.forecasters["nhits"].predict(w)
    np.testing.assert_array_equal(
        forecast_to_probabilities(forecast, trained.residual_std["nhits"], CONFIG.band), mine["nhits"]
    )
    assert trained.probabilities(x, w, ("xgboost",)).keys() == {"xgboost"}


def test_walk_forward_retrains_before_every_fold_and_returns_its_predictions(rows: SymbolRows) -> None:
    from app.domains.learning.training import walk_forward

    t = rows.timestamp
    folds = [int(t[int(len(t) * 0.7)]), int(t[int(len(t) * 0.85)])]
    result = walk_forward([rows], folds, int(t[-1]) + 1, train_days=120, config=CONFIG)
    assert [f["test_start_ms"] for f in result.folds] == folds
    assert result.test_rows == sum(f["test_rows"] for f in result.folds) == int((t >= folds[0]).sum())
    for fold in result.folds:
        window_rows = (t < fold["test_start_ms"] - CONFIG.embargo_hours * HOUR) & (
            t >= fold["test_start_ms"] - 120 * 24 * HOUR
        )
        assert fold["train_rows"] == int(window_rows.sum())  # only the 120 days before the embargo
    np.testing.assert_array_equal(result.rows.timestamp, t[t >= folds[0]])
    assert (result.rows.group == 0).all()
    assert set(result.predictions) >= {*MODEL_KINDS, "prior"}
    for p in result.predictions.values():
        assert p.shape == (result.test_rows, 3)
    assert (result.fold[result.rows.timestamp < folds[1]] == 0).all()
    assert (result.fold[result.rows.timestamp >= folds[1]] == 1).all()
