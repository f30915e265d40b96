"""Datasets, walk-forward splits and the classification metrics shared by training and promotion.

Economic value is NOT measured here: the report, `python -m app evaluate`, the promotion gate and
the CLM score what is served with `backtest` (the served decision and minimum confidence, next-open
entry, TP1/SL/max hold, fees, slippage, funding). `rule_metrics` (hold the argmax side from each
close to the next, re-decided every candle) remains only for `training.report`, which nothing that
judges a model uses any more; it trades at prices no one could have had. Metrics are computed on
out-of-sample rows only.
"""

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.domains.signals.candles import Candles, FloatArray, Funding, IntArray
from app.domains.signals.features import compute_features
from app.domains.signals.labels import CLASSES, LONG, SHORT, UNKNOWN, direction_labels, forward_return

HOURS_PER_YEAR = 24 * 365
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


def positions_from_classes(classes: npt.NDArray[np.int64]) -> FloatArray:
    return np.where(classes == LONG, 1.0, np.where(classes == SHORT, -1.0, 0.0))


def rule_metrics(
    positions: FloatArray,
    next_return: FloatArray,
    fee_rate: float,
    group: IntArray | None = None,
    timestamp: IntArray | None = None,
) -> dict[str, float]:
    """Net-of-fee result of holding `positions` (in -1..1) over each next candle (not the served rule:
    see `backtest`).

    With several symbols (`group`), capital is split equally between them, turnover is
    counted within each symbol, and returns are summed per timestamp before compounding.
    Rows must be in time order.
    """
    if group is None or timestamp is None:
        group = np.zeros(len(positions), dtype=np.int64)
        timestamp = np.arange(len(positions), dtype=np.int64)
    symbols = np.unique(group)
    turnover = np.empty_like(positions)
    for g in symbols:
        rows = np.flatnonzero(group == g)
        turnover[rows] = np.abs(np.diff(np.concatenate([[0.0], positions[rows]])))
    per_row = (positions * np.expm1(next_return) - turnover * fee_rate) / len(symbols)
    _, period = np.unique(timestamp, return_inverse=True)
    net = np.bincount(period, weights=per_row)
    std = float(net.std(ddof=1)) if len(net) > 1 else 0.0
    return {
        "net_return": float(np.prod(1.0 + net) - 1.0),
        "sharpe": float(net.mean() / std * math.sqrt(HOURS_PER_YEAR)) if std > 0 else 0.0,
        "turnover": float(turnover.sum() / len(symbols)),
        "exposure": float(np.abs(positions).mean()),
    }


def evaluate_probabilities(probabilities: FloatArray, data: Dataset, fee_rate: float) -> dict[str, float]:
    classes = probabilities.argmax(axis=1).astype(np.int64)
    return {
        **classification_metrics(probabilities, data.y),
        **rule_metrics(positions_from_classes(classes), data.next_return, fee_rate, data.group, data.timestamp),
    }


def prior_probabilities(y_train: npt.NDArray[np.int64], n: int) -> FloatArray:
    """The baseline every model must beat: training class frequencies, for every row."""
    counts = np.bincount(y_train, minlength=len(CLASSES)).astype(np.float64)
    return np.tile(counts / counts.sum(), (n, 1))
