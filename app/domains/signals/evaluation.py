"""Datasets, walk-forward splits and the classification metrics shared by training and promotion.

Economic value is NOT measured here: the report, `python -m app evaluate`, the promotion gate and
the CLM score what is served with `backtest` (the served decision and minimum confidence, next-open
entry, TP1/SL/max hold, fees, slippage, funding). Metrics are computed on out-of-sample rows only.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.domains.markets.candles import Candles, FloatArray, Funding, IntArray
from app.domains.signals.features import compute_features
from app.domains.signals.labels import CLASSES, UNKNOWN, direction_labels, forward_return

EPS = 1e-12


@dataclass(frozen=True)
class Dataset:
    """Rows where every feature is defined and the label is known."""

    symbol: str
    timestamp: IntArray
    x: FloatArray
    y: npt.NDArray[np.int64]
    next_return: FloatArray  # log return from this candle's close to the next one's
    group: IntArray | None = None  # symbol index per row when several symbols are mixed


def build_dataset(candles: Candles, funding: Funding | None, horizon: int, band: float) -> Dataset:
    features = compute_features(candles, funding)
    labels = direction_labels(candles.close, horizon, band)
    next_return = forward_return(candles.close, 1)
    keep = features.valid & (labels != UNKNOWN) & np.isfinite(next_return)
    return Dataset(candles.symbol, candles.timestamp[keep], features.values[keep], labels[keep], next_return[keep])


def concat(datasets: list[Dataset]) -> Dataset:
    """Several symbols in one set, ordered by time (ties keep symbol order)."""
    timestamp = np.concatenate([d.timestamp for d in datasets])
    order = np.argsort(timestamp, kind="stable")
    group = np.concatenate([np.full(len(d.y), i, dtype=np.int64) for i, d in enumerate(datasets)])
    return Dataset(
        ",".join(d.symbol for d in datasets),
        timestamp[order],
        np.concatenate([d.x for d in datasets])[order],
        np.concatenate([d.y for d in datasets])[order],
        np.concatenate([d.next_return for d in datasets])[order],
        group[order],
    )


@dataclass(frozen=True)
class Split:
    train: npt.NDArray[np.intp]
    test: npt.NDArray[np.intp]


def walk_forward_splits(timestamp: IntArray, n_folds: int, test_fraction: float, embargo_ms: int) -> list[Split]:
    """Expanding-window folds over time; training rows end `embargo_ms` before each test window,
    so labels that look into the test window never reach training."""
    start_ms, end_ms = int(timestamp[0]), int(timestamp[-1]) + 1
    span = end_ms - start_ms
    test_ms = int(span * test_fraction / n_folds)
    first_test = end_ms - n_folds * test_ms
    splits = []
    for k in range(n_folds):
        lo, hi = first_test + k * test_ms, first_test + (k + 1) * test_ms
        train = np.flatnonzero(timestamp < lo - embargo_ms)
        test = np.flatnonzero((timestamp >= lo) & (timestamp < hi))
        if len(train) and len(test):
            splits.append(Split(train, test))
    return splits


def classification_metrics(probabilities: FloatArray, y: npt.NDArray[np.int64]) -> dict[str, float]:
    p = np.clip(probabilities, EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    onehot = np.eye(len(CLASSES))[y]
    return {
        "accuracy": float((p.argmax(axis=1) == y).mean()),
        "log_loss": float(-np.mean(np.log(p[np.arange(len(y)), y]))),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
    }


def prior_probabilities(y_train: npt.NDArray[np.int64], n: int) -> FloatArray:
    """The baseline every model must beat: training class frequencies, for every row."""
    counts = np.bincount(y_train, minlength=len(CLASSES)).astype(np.float64)
    return np.tile(counts / counts.sum(), (n, 1))
