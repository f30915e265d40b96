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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from app.core.clock import HOUR_MS
from app.domains.markets.candles import Candles, FloatArray, Funding, IntArray
from app.domains.signals.ensemble import Ensemble, forecast_to_probabilities, log_loss
from app.domains.signals.evaluation import Dataset, prior_probabilities
from app.domains.signals.features import FeatureMatrix, compute_features
from app.domains.signals.labels import UNKNOWN, direction_labels, forward_return
from app.domains.signals.meta import time_slices
from app.domains.signals.models import FORECASTER_KINDS, GBM_KINDS, MODEL_KINDS
from app.domains.signals.models.forecaster import ForecasterConfig, TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier, GbmConfig
from app.domains.signals.models.tensors import seeded_torch

WINDOW_CHANNELS = ("ret_1", "atr_pct", "volume_z_72", "rsi_14")  # per-candle inputs of the forecasters
SLICES = ("fit", "early_stopping", "weights", "calibration")


@dataclass(frozen=True)
class TrainingConfig:
    horizon: int = 4
    band: float = 0.002
    window: int = 48
    embargo_hours: int = 24
    validation_fraction: float = 0.2  # the early-stopping slice's share of the training rows
    weights_fraction: float = 0.125  # the ensemble-weights slice's share
    calibration_fraction: float = 0.125  # the calibration slice's share (the newest rows)
    fee_rate: float = 0.0004
    torch_epochs: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        shares = (self.validation_fraction, self.weights_fraction, self.calibration_fraction)
        if min(shares) <= 0 or sum(shares) >= 0.9:
            raise ValueError(
                f"the early-stopping, weights and calibration shares must be > 0 and leave >= 10 % to fit, got {shares}"
            )


@dataclass(frozen=True)
class SymbolRows:
    """Model inputs of one symbol for rows where everything is defined."""

    symbol: str
    timestamp: IntArray
    x: FloatArray  # features (n, len(FEATURES))
    windows: FloatArray  # forecaster inputs (n, window, len(WINDOW_CHANNELS))
    y: npt.NDArray[np.int64]  # direction labels
    target: FloatArray  # (n, horizon): the next `horizon` 1 h log returns; their sum is the labelled return
    next_return: FloatArray  # log return to the next candle (for the trading rule)
    change_24h: FloatArray  # for the momentum fallback baseline
    group: IntArray  # symbol index per row


def window_channels(features: FeatureMatrix) -> FloatArray:
    """Per-candle inputs of the forecasters, centred where a feature has a natural middle."""
    channels = np.column_stack([features.column(name) for name in WINDOW_CHANNELS])
    channels[:, WINDOW_CHANNELS.index("rsi_14")] -= 0.5
    return channels


@dataclass(frozen=True)
class LatestInputs:
    """Model inputs of the last candle, exactly as training builds them for every row."""

    features: FeatureMatrix
    x: FloatArray  # (1, len(FEATURES))
    window: FloatArray  # (1, window, len(WINDOW_CHANNELS))
    ready: bool  # False while the indicators or the window are still warming up


def latest_inputs(candles: Candles, funding: Funding | None, config: TrainingConfig) -> LatestInputs:
    features = compute_features(candles, funding)
    channels = window_channels(features)
    ready = len(candles) >= config.window and bool(features.valid[-config.window :].all())
    return LatestInputs(features, features.values[-1:], channels[None, -config.window :, :], ready)


def symbol_rows(candles: Candles, funding: Funding | None, config: TrainingConfig) -> SymbolRows:
    features = compute_features(candles, funding)
    labels = direction_labels(candles.close, config.horizon, config.band)
    next_return = forward_return(candles.close, 1)
    target = np.full((len(candles), config.horizon), np.nan)
    for step in range(config.horizon):
        target[: len(candles) - step, step] = next_return[step:]
    channels = window_channels(features)
    window_ok = np.zeros(len(candles), dtype=bool)
    valid = features.valid.astype(np.int64)
    if len(candles) >= config.window:
        complete = sliding_window_view(valid, config.window).sum(axis=1) == config.window
        window_ok[config.window - 1 :] = complete
    keep = np.flatnonzero(window_ok & (labels != UNKNOWN) & np.isfinite(target).all(axis=1))
    windows = sliding_window_view(channels, config.window, axis=0)  # (n - w + 1, C, w)
    change_24h = np.full(len(candles), np.nan)
    change_24h[24:] = candles.close[24:] / candles.close[:-24] - 1.0
    return SymbolRows(
        symbol=candles.symbol,
        timestamp=candles.timestamp[keep],
        x=features.values[keep],
        windows=np.ascontiguousarray(windows[keep - config.window + 1].transpose(0, 2, 1)),
        y=labels[keep],
        target=target[keep],
        next_return=next_return[keep],
        change_24h=change_24h[keep],
        group=np.zeros(len(keep), dtype=np.int64),
    )


def _stack(parts: list[SymbolRows], masks: list[npt.NDArray[np.bool_]]) -> SymbolRows:
    """Rows of several symbols selected by `masks`, ordered by time."""

    def cat(name: str) -> Any:
        return np.concatenate([getattr(p, name)[m] for p, m in zip(parts, masks, strict=True)])

    timestamp = cat("timestamp")
    order = np.argsort(timestamp, kind="stable")
    group = np.concatenate([np.full(int(m.sum()), i, dtype=np.int64) for i, m in enumerate(masks)])
    return SymbolRows(
        ",".join(p.symbol for p in parts),
        timestamp[order],
        cat("x")[order],
        cat("windows")[order],
        cat("y")[order],
        cat("target")[order],
        cat("next_return")[order],
        cat("change_24h")[order],
        group[order],
    )


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


@dataclass
class TrainedModels:
    config: TrainingConfig
    gbm: dict[str, GbmClassifier]
    forecasters: dict[str, TorchForecaster]
    ensemble: Ensemble
    prior: FloatArray  # class frequencies of all training rows (3,): the baseline every model must beat
    fit_seconds: dict[str, float] = field(default_factory=dict)
    fit_info: dict[str, Any] = field(default_factory=dict)  # slices, stopping points, weights-slice losses

    @property
    def residual_std(self) -> dict[str, float]:
        """Kept for callers of `forecast_to_probabilities(forecaster.predict(w), residual_std[kind], band)`: the
        forecasters predict σ per row (`predict` gives mean and σ), so there is no constant error σ (NaN, unused)."""
        return dict.fromkeys(self.forecasters, float("nan"))

    def member_probabilities(self, kind: str, x: FloatArray, windows: FloatArray) -> FloatArray:
        """One member's class probabilities: the boosted trees read the features, the forecasters the windows."""
        if kind in self.gbm:
            return self.gbm[kind].predict_proba(x)
        return forecast_to_probabilities(self.forecasters[kind].predict(windows), float("nan"), self.config.band)

    def probabilities(
        self, x: FloatArray, windows: FloatArray, kinds: tuple[str, ...] | None = None
    ) -> dict[str, FloatArray]:
        """Class probabilities of every member (or of `kinds` only, e.g. `ensemble.active`)."""
        wanted = [*self.gbm, *self.forecasters] if kinds is None else kinds
        return {kind: self.member_probabilities(kind, x, windows) for kind in wanted}


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
    joined = _stack(tests, [np.ones(len(t.y), dtype=bool) for t in tests])
    order = np.argsort(np.concatenate([t.timestamp for t in tests]), kind="stable")
    names = set.intersection(*(set(p) for p in predicted))
    # `_stack` numbers its parts (here: folds) as groups; put the symbol index back
    rows = SymbolRows(
        joined.symbol,
        joined.timestamp,
        joined.x,
        joined.windows,
        joined.y,
        joined.target,
        joined.next_return,
        joined.change_24h,
        np.concatenate([t.group for t in tests])[order],
    )
    fold = np.concatenate([np.full(len(t.y), k, dtype=np.int64) for k, t in enumerate(tests)])[order]
    joined_predictions = {name: np.concatenate([p[name] for p in predicted])[order] for name in sorted(names)}
    return WalkForward(rows, joined_predictions, fold, folds)


def as_dataset(rows: SymbolRows) -> Dataset:
    return Dataset(rows.symbol, rows.timestamp, rows.x, rows.y, rows.next_return, rows.group)


def split_by_time(
    parts: list[SymbolRows],
    test_start_ms: int,
    embargo_hours: int,
    until_ms: int | None = None,
    train_from_ms: int | None = None,
) -> tuple[SymbolRows, SymbolRows]:
    """Training rows end `embargo_hours` before the test window; test rows start at it."""
    embargo = embargo_hours * HOUR_MS
    train = [
        (p.timestamp < test_start_ms - embargo) & (train_from_ms is None or p.timestamp >= train_from_ms) for p in parts
    ]
    test = [(p.timestamp >= test_start_ms) & (until_ms is None or p.timestamp < until_ms) for p in parts]
    return _stack(parts, train), _stack(parts, test)
