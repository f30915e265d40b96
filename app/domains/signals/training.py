"""Train the four models and the ensemble on a time split, and score them out of sample.

Time is split three ways per run: fit (oldest), validation (for early stopping, the
forecasters' error model, ensemble weights and calibration) and test (newest, touched
only for the report). An embargo of `embargo_hours` separates the parts, so no label
looks across a boundary. Scalers and every other fitted quantity see fit rows only.
"""

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from app.domains.signals.candles import Candles, FloatArray, Funding, IntArray
from app.domains.signals.ensemble import Ensemble, forecast_to_probabilities, log_loss
from app.domains.signals.evaluation import (
    Dataset,
    classification_metrics,
    evaluate_probabilities,
    positions_from_classes,
    prior_probabilities,
    rule_metrics,
)
from app.domains.signals.features import FeatureMatrix, compute_features
from app.domains.signals.labels import HOLD, LONG, SHORT, UNKNOWN, direction_labels, forward_return
from app.domains.signals.models.forecaster import ForecasterConfig, TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier, GbmConfig

HOUR_MS = 3_600_000
MODEL_KINDS = ("xgboost", "lightgbm", "nhits", "patchtst")
WINDOW_CHANNELS = ("ret_1", "atr_pct", "volume_z_72", "rsi_14")  # per-candle inputs of the forecasters
BASELINES = ("prior", "fallback_momentum", "always_hold", "buy_and_hold")


@dataclass(frozen=True)
class TrainingConfig:
    horizon: int = 4
    band: float = 0.002
    window: int = 48
    embargo_hours: int = 24
    validation_fraction: float = 0.2
    fee_rate: float = 0.0004
    torch_epochs: int = 8
    seed: int = 0


@dataclass(frozen=True)
class SymbolRows:
    """Model inputs of one symbol for rows where everything is defined."""

    symbol: str
    timestamp: IntArray
    x: FloatArray  # features (n, len(FEATURES))
    windows: FloatArray  # forecaster inputs (n, window, len(WINDOW_CHANNELS))
    y: npt.NDArray[np.int64]  # direction labels
    target: FloatArray  # forward log return over the horizon
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
    target = forward_return(candles.close, config.horizon)
    next_return = forward_return(candles.close, 1)
    channels = window_channels(features)
    window_ok = np.zeros(len(candles), dtype=bool)
    valid = features.valid.astype(np.int64)
    if len(candles) >= config.window:
        complete = sliding_window_view(valid, config.window).sum(axis=1) == config.window
        window_ok[config.window - 1 :] = complete
    keep = np.flatnonzero(window_ok & (labels != UNKNOWN) & np.isfinite(next_return))
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


def momentum_classes(change_24h: FloatArray) -> npt.NDArray[np.int64]:
    """The fallback rule, vectorised: LONG above +1 %, SHORT below -1 %."""
    return np.where(change_24h > 0.01, LONG, np.where(change_24h < -0.01, SHORT, HOLD)).astype(np.int64)


def side_metrics(classes: npt.NDArray[np.int64], rows: SymbolRows, fee_rate: float) -> dict[str, float | None]:
    """Metrics of a rule that gives a side but no probabilities: log loss and Brier do not apply."""
    positions = positions_from_classes(classes)
    rule = rule_metrics(positions, rows.next_return, fee_rate, rows.group, rows.timestamp)
    return {
        "accuracy": float((classes == rows.y).mean()),
        "log_loss": None,
        "brier": None,
        "net_return": rule["net_return"],
        "sharpe": rule["sharpe"] if positions.any() else None,
    }


@dataclass
class TrainedModels:
    config: TrainingConfig
    gbm: dict[str, GbmClassifier]
    forecasters: dict[str, TorchForecaster]
    residual_std: dict[str, float]
    ensemble: Ensemble
    prior: FloatArray  # training class frequencies (3,)
    fit_seconds: dict[str, float] = field(default_factory=dict)

    def probabilities(self, x: FloatArray, windows: FloatArray) -> dict[str, FloatArray]:
        out = {kind: model.predict_proba(x) for kind, model in self.gbm.items()}
        for kind, model in self.forecasters.items():
            out[kind] = forecast_to_probabilities(model.predict(windows), self.residual_std[kind], self.config.band)
        return out


def fit_models(rows: SymbolRows, config: TrainingConfig) -> TrainedModels:
    """Fit on the older rows, validate on the newest `validation_fraction` of them."""
    start, end = int(rows.timestamp[0]), int(rows.timestamp[-1])
    val_start = end - int((end - start) * config.validation_fraction)
    fit = rows.timestamp < val_start - config.embargo_hours * HOUR_MS
    val = rows.timestamp >= val_start
    seconds: dict[str, float] = {}
    gbm: dict[str, GbmClassifier] = {}
    for kind in ("xgboost", "lightgbm"):
        began = time.perf_counter()
        model = GbmClassifier(GbmConfig(kind=kind, seed=config.seed))
        model.fit(rows.x[fit], rows.y[fit], rows.x[val], rows.y[val])
        gbm[kind] = model
        seconds[kind] = time.perf_counter() - began
    forecasters: dict[str, TorchForecaster] = {}
    residual_std: dict[str, float] = {}
    for kind in ("nhits", "patchtst"):
        began = time.perf_counter()
        model_t = TorchForecaster(
            ForecasterConfig(
                kind=kind,
                window=config.window,
                channels=len(WINDOW_CHANNELS),
                epochs=config.torch_epochs,
                seed=config.seed,
                loss="huber",
            )
        )
        model_t.fit(rows.windows[fit], rows.target[fit], rows.windows[val], rows.target[val])
        forecasters[kind] = model_t
        residual_std[kind] = float(np.std(rows.target[val] - model_t.predict(rows.windows[val])))
        seconds[kind] = time.perf_counter() - began
    prior = prior_probabilities(rows.y[fit], 1)[0]
    trained = TrainedModels(config, gbm, forecasters, residual_std, Ensemble({}), prior, seconds)
    val_probabilities = trained.probabilities(rows.x[val], rows.windows[val])
    prior_loss = log_loss(np.tile(prior, (int(val.sum()), 1)), rows.y[val])
    trained.ensemble = Ensemble.fit(val_probabilities, rows.y[val], prior_loss)
    return trained


def predictions(trained: TrainedModels, rows: SymbolRows) -> dict[str, FloatArray]:
    """Class probabilities of every model, the ensemble (if usable) and the prior, for `rows`."""
    per_model = trained.probabilities(rows.x, rows.windows)
    out = {kind: per_model[kind] for kind in MODEL_KINDS}
    if trained.ensemble.usable:
        out["ensemble"] = trained.ensemble.combine(per_model)
    out["prior"] = np.tile(trained.prior, (len(rows.y), 1))
    return out


def report(probabilities: dict[str, FloatArray], rows: SymbolRows, fee: float) -> dict[str, dict[str, float | None]]:
    """The out-of-sample report: every model, the ensemble and the baselines on `rows`."""
    out: dict[str, dict[str, float | None]] = {}
    for kind in MODEL_KINDS:
        out[kind] = {**evaluate_probabilities(probabilities[kind], as_dataset(rows), fee)}
    if "ensemble" in probabilities:
        out["ensemble"] = {**evaluate_probabilities(probabilities["ensemble"], as_dataset(rows), fee)}
    else:
        out["ensemble"] = dict.fromkeys(("accuracy", "log_loss", "brier", "net_return", "sharpe"))
    out["prior"] = {**classification_metrics(probabilities["prior"], rows.y), "net_return": None, "sharpe": None}
    out["fallback_momentum"] = side_metrics(momentum_classes(rows.change_24h), rows, fee)
    out["always_hold"] = side_metrics(np.full(len(rows.y), HOLD, dtype=np.int64), rows, fee)
    out["buy_and_hold"] = side_metrics(np.full(len(rows.y), LONG, dtype=np.int64), rows, fee)
    keep = ("accuracy", "log_loss", "brier", "net_return", "sharpe")
    return {name: {k: v for k, v in metrics.items() if k in keep} for name, metrics in out.items()}


def evaluate(trained: TrainedModels, rows: SymbolRows) -> dict[str, dict[str, float | None]]:
    return report(predictions(trained, rows), rows, trained.config.fee_rate)


@dataclass(frozen=True)
class WalkForward:
    report: dict[str, dict[str, float | None]]
    folds: list[dict[str, Any]]
    test_rows: int


def walk_forward(
    parts: list[SymbolRows], fold_starts_ms: list[int], end_ms: int, train_days: int, config: TrainingConfig
) -> WalkForward:
    """Retrain before every fold on the `train_days` ending an embargo before it, predict the fold,
    and score the concatenated out-of-sample predictions of all folds."""
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
                "fit_seconds": trained.fit_seconds,
            }
        )
    rows = _stack(tests, [np.ones(len(t.y), dtype=bool) for t in tests])
    order = np.argsort(np.concatenate([t.timestamp for t in tests]), kind="stable")
    names = set.intersection(*(set(p) for p in predicted))
    joined = {name: np.concatenate([p[name] for p in predicted])[order] for name in names}
    # the folds' groups are per fold; put the symbol index back so turnover is counted per symbol
    rows = SymbolRows(
        rows.symbol,
        rows.timestamp,
        rows.x,
        rows.windows,
        rows.y,
        rows.target,
        rows.next_return,
        rows.change_24h,
        np.concatenate([t.group for t in tests])[order],
    )
    return WalkForward(report(joined, rows, config.fee_rate), folds, len(rows.y))


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
