"""Train the four models and the ensemble on a time split, and score them out of sample.

Honest fitting: every fitted quantity is chosen on rows that no earlier choice was made on. The
training rows are cut in time into four slices (`fitting_slices`), oldest first:

  fit -> early stopping -> ensemble weights -> calibration

- fit: the models' parameters and the scalers;
- early stopping: the boosted trees' number of rounds and the forecasters' best epoch; the trees are then
  refitted on the fit and early-stopping rows with that number of rounds (cheap, and 20 % more, newer rows:
  held-out log loss about 0.01 lower); the forecasters are not (a second PatchTST fit costs ~20 s);
- ensemble weights: each member's log loss against the prior's (the fit slice's class frequencies, what the
  members learned from), on rows neither its parameters nor its stopping point were chosen on;
- calibration: the ensemble's temperature (T = 1 unless a softening T > 1 fits better; a sharpening T < 1
  only if it wins on held-out forward-chaining folds of this slice, `ensemble.choose_temperature`).

Each boundary is purged (a row whose label window, its `horizon` hours, reaches the next slice is dropped)
and embargoed (the next slice starts `embargo_hours` after the last kept label ends): `meta.time_slices`.
The prior the set reports and is judged against (`TrainedModels.prior`) is the class frequencies of all
training rows, the newest and so the hardest baseline to beat. The forecasters have no separately fitted
error model any more: their distributional heads predict σ
per row (`models.forecaster`), so nothing else is fitted on a validation slice. The test window of a run
(`split_by_time`, `walk_forward`) is never seen by any of it.
"""

import itertools
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.clock import HOUR_MS
from app.domains.learning.dataset import SymbolRows, join_rows, split_by_time
from app.domains.learning.evaluation import Reliability, prior_probabilities, reliability_table
from app.domains.markets.candles import FloatArray, IntArray
from app.domains.signals.barriers import BarrierConfig
from app.domains.signals.ensemble import Ensemble, log_loss
from app.domains.signals.meta import (
    MetaConfig,
    MetaRows,
    binary_log_loss,
    brier_score,
    fit_meta,
    purged_walk_forward_splits,
    time_slices,
)
from app.domains.signals.models import FORECASTER_KINDS, GBM_KINDS, MODEL_KINDS
from app.domains.signals.models.forecaster import ForecasterConfig, TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier, GbmConfig
from app.domains.signals.models.tensors import seeded_torch
from app.domains.signals.modelset import WINDOW_CHANNELS, TrainedModels, TrainingConfig

SLICES = ("fit", "early_stopping", "weights", "calibration")


@dataclass(frozen=True)
class FitSlices:
    """Row indices of the four training slices (each in time order, each before the next, purged and embargoed)."""

    fit: npt.NDArray[np.intp]
    early_stopping: npt.NDArray[np.intp]
    weights: npt.NDArray[np.intp]
    calibration: npt.NDArray[np.intp]

    def named(self) -> dict[str, npt.NDArray[np.intp]]:
        return {name: getattr(self, name) for name in SLICES}


def label_windows(rows: SymbolRows, config: TrainingConfig) -> tuple[IntArray, IntArray]:
    """Each row's label window [t, t + horizon]: what a purge must keep from reaching another slice."""
    return rows.timestamp, rows.timestamp + config.horizon * HOUR_MS


def fitting_slices(rows: SymbolRows, config: TrainingConfig) -> FitSlices:
    """fit -> early stopping -> weights -> calibration, by the config's shares of the rows (`meta.time_slices`)."""
    shares = (config.validation_fraction, config.weights_fraction, config.calibration_fraction)
    start, end = label_windows(rows, config)
    parts = time_slices(start, end, (1.0 - sum(shares), *shares), config.embargo_hours * HOUR_MS)
    empty = [name for name, part in zip(SLICES, parts, strict=True) if len(part) == 0]
    if empty:
        raise ValueError(f"too few training rows ({len(rows.y)}) for the slices: {', '.join(empty)} empty")
    return FitSlices(*parts)


def _span(rows: SymbolRows, index: npt.NDArray[np.intp]) -> dict[str, int]:
    return {"rows": len(index), "from_ms": int(rows.timestamp[index[0]]), "to_ms": int(rows.timestamp[index[-1]])}


def fit_models(rows: SymbolRows, config: TrainingConfig) -> TrainedModels:
    """Fit the members on the fit slice, stop them early on the next, weigh them on the next and calibrate the
    ensemble on the newest (`fitting_slices`; the module docstring)."""
    slices = fitting_slices(rows, config)
    fit, stop, weigh, cal = slices.fit, slices.early_stopping, slices.weights, slices.calibration
    fit_and_stop = np.concatenate([fit, stop])
    seconds: dict[str, float] = {}
    stopping: dict[str, dict[str, float]] = {}
    gbm: dict[str, GbmClassifier] = {}
    for kind in GBM_KINDS:
        began = time.perf_counter()
        model = GbmClassifier(GbmConfig(kind=kind, seed=config.seed))
        stopping[kind] = model.fit(rows.x[fit], rows.y[fit], rows.x[stop], rows.y[stop])
        rounds = (model.best_iteration or 0) + 1
        gbm[kind] = GbmClassifier(GbmConfig(kind=kind, seed=config.seed, n_rounds=rounds))
        gbm[kind].fit(rows.x[fit_and_stop], rows.y[fit_and_stop])
        seconds[kind] = time.perf_counter() - began
    forecasters: dict[str, TorchForecaster] = {}
    for kind in FORECASTER_KINDS:
        began = time.perf_counter()
        model_t = TorchForecaster(
            ForecasterConfig(
                kind=kind,
                window=config.window,
                channels=len(WINDOW_CHANNELS),
                horizon=config.horizon,
                revin_center=False,  # PatchTST's instance normalisation scale-only: its target, returns, is centred
                epochs=config.torch_epochs,
                seed=config.seed,
            )
        )
        stopping[kind] = model_t.fit(rows.windows[fit], rows.target[fit], rows.windows[stop], rows.target[stop])
        forecasters[kind] = model_t
        seconds[kind] = time.perf_counter() - began
    prior = prior_probabilities(rows.y, 1)[0]
    fit_prior = prior_probabilities(rows.y[fit], 1)[0]
    trained = TrainedModels(config, gbm, forecasters, Ensemble({}), prior, seconds)
    began = time.perf_counter()
    with seeded_torch(None):  # one intra-op thread, as the fits (several would contend with other work)
        on_weights = trained.probabilities(rows.x[weigh], rows.windows[weigh])
    losses = {kind: log_loss(p, rows.y[weigh]) for kind, p in on_weights.items()}
    prior_loss = log_loss(np.tile(fit_prior, (len(weigh), 1)), rows.y[weigh])
    ensemble = Ensemble.fit(on_weights, rows.y[weigh], prior_loss)
    if ensemble.usable:
        start, end = label_windows(rows, config)
        with seeded_torch(None):
            on_cal = trained.probabilities(rows.x[cal], rows.windows[cal], ensemble.active)
        ensemble = ensemble.calibrated(
            on_cal, rows.y[cal], start[cal], end[cal], embargo_ms=config.embargo_hours * HOUR_MS
        )
    trained.ensemble = ensemble
    seconds["ensemble"] = time.perf_counter() - began
    trained.fit_info = {
        "slices": {name: _span(rows, index) for name, index in slices.named().items()},
        "stopping": stopping,
        "weights_slice_log_loss": {**losses, "prior": prior_loss},
        "temperature": ensemble.evidence,
    }
    return trained


def predictions(trained: TrainedModels, rows: SymbolRows) -> dict[str, FloatArray]:
    """Class probabilities of every model, the ensemble (if usable) and the prior, for `rows`."""
    per_model = trained.probabilities(rows.x, rows.windows)
    out = {kind: per_model[kind] for kind in MODEL_KINDS}
    if trained.ensemble.usable:
        out["ensemble"] = trained.ensemble.combine(per_model)
    out["prior"] = np.tile(trained.prior, (len(rows.y), 1))
    return out


@dataclass(frozen=True)
class WalkForward:
    """Out-of-sample predictions of every fold, for a report to score (e.g. `backtest.served_report`)."""

    rows: SymbolRows  # every fold's test rows, in time order; `group` is the symbol index
    predictions: dict[str, FloatArray]  # per name (members, "ensemble" if every fold had one, "prior"), row-aligned
    fold: IntArray  # the fold of each row
    folds: list[dict[str, Any]]

    @property
    def test_rows(self) -> int:
        return len(self.rows.y)


def walk_forward(
    parts: list[SymbolRows], fold_starts_ms: list[int], end_ms: int, train_days: int, config: TrainingConfig
) -> WalkForward:
    """Retrain before every fold on the `train_days` ending an embargo before it and predict the fold; returns the
    folds' out-of-sample predictions, joined in time order (scoring them is the caller's)."""
    bounds = [*fold_starts_ms, end_ms]
    tests: list[SymbolRows] = []
    predicted: list[dict[str, FloatArray]] = []
    folds: list[dict[str, Any]] = []
    for start, stop in itertools.pairwise(bounds):
        train, test = split_by_time(parts, start, config.embargo_hours, stop, start - train_days * 24 * HOUR_MS)
        trained = fit_models(train, config)
        tests.append(test)
        predicted.append(predictions(trained, test))
        folds.append(
            {
                "test_start_ms": start,
                "test_end_ms": stop,
                "train_rows": len(train.y),
                "test_rows": len(test.y),
                "weights": trained.ensemble.weights,
                "temperature": trained.ensemble.temperature,
                "fit_seconds": trained.fit_seconds,
                "fit_info": trained.fit_info,
            }
        )
    rows = join_rows(tests)
    names = set.intersection(*(set(p) for p in predicted))
    fold = np.concatenate([np.full(len(t.y), k, dtype=np.int64) for k, t in enumerate(tests)])
    joined_predictions = {name: np.concatenate([p[name] for p in predicted]) for name in sorted(names)}
    return WalkForward(rows, joined_predictions, fold, folds)


# --- the meta layer, walk-forward ----------------------------------------------------------------------


@dataclass(frozen=True)
class MetaWalkForward:
    """Out-of-sample predictions of models refitted before every fold, and the base rate each fold's training
    rows gave (the honest baseline)."""

    index: npt.NDArray[np.intp]  # rows of the input, in fold order
    predicted: FloatArray
    base_rate: FloatArray
    label: FloatArray
    folds: list[dict[str, Any]]

    def reliability(self, n_bins: int = 10, *, quantile: bool = False) -> Reliability:
        table = reliability_table(self.predicted, self.label, n_bins, quantile=quantile)
        base = brier_score(self.base_rate, self.label), binary_log_loss(self.base_rate, self.label)
        return replace(table, base_rate=float(self.base_rate.mean()), base_brier=base[0], base_log_loss=base[1])


def walk_forward_meta(
    rows: MetaRows,
    n_folds: int = 4,
    test_fraction: float = 0.5,
    config: MetaConfig | None = None,
    barriers: BarrierConfig | None = None,
) -> MetaWalkForward:
    """Refit before each of `n_folds` consecutive test windows (the newest `test_fraction` of the span) on the
    purged, embargoed rows before it; predict the window."""
    cfg = config or MetaConfig()
    parts: list[tuple[npt.NDArray[np.intp], FloatArray, FloatArray]] = []
    folds: list[dict[str, Any]] = []
    for split in purged_walk_forward_splits(rows.timestamp, rows.end_ms, n_folds, test_fraction, cfg.embargo_ms):
        model = fit_meta(rows.take(split.train), cfg, barriers=barriers)
        test = rows.take(split.test)
        p = model.predict_proba(test.features, test.primary_probs, test.sides)
        parts.append((split.test, p, np.full(len(split.test), model.base_rate)))
        folds.append(
            {
                "test_from_ms": int(test.timestamp.min()),
                "test_until_ms": int(test.timestamp.max()),
                "train_rows": len(split.train),
                "test_rows": len(split.test),
                **{k: v for k, v in model.report.items() if k not in ("rows",)},
                "test": reliability_table(p, test.label, base_rate=model.base_rate).as_dict(),
            }
        )
    if not parts:
        raise ValueError("no walk-forward fold has both training and test rows")
    index = np.concatenate([p[0] for p in parts])
    return MetaWalkForward(
        index,
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        rows.label[index],
        folds,
    )
