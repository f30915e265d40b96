"""The one dataset type of learning: model inputs, labels and targets of every row where all of them are defined.

`symbol_rows` builds one symbol's rows from its candles exactly as serving builds the last candle's inputs
(`signals.modelset.latest_inputs`); `stack_rows` joins several symbols in time order; `split_by_time` cuts a
training and a test set an embargo apart.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from app.core.clock import HOUR_MS
from app.domains.markets.candles import Candles, FloatArray, Funding, IntArray
from app.domains.signals.features import compute_features
from app.domains.signals.labels import UNKNOWN, direction_labels, forward_return
from app.domains.signals.modelset import TrainingConfig, window_channels


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

    def take(self, mask: npt.NDArray[np.bool_]) -> "SymbolRows":
        """The rows selected by `mask`, in their order."""
        return SymbolRows(
            self.symbol,
            self.timestamp[mask],
            self.x[mask],
            self.windows[mask],
            self.y[mask],
            self.target[mask],
            self.next_return[mask],
            self.change_24h[mask],
            self.group[mask],
        )


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


def stack_rows(parts: list[SymbolRows], masks: list[npt.NDArray[np.bool_]]) -> SymbolRows:
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


def join_rows(parts: list[SymbolRows]) -> SymbolRows:
    """Consecutive parts (e.g. the test windows of successive folds) in one set, in the given order, each row
    keeping its `group` (its symbol index)."""

    def cat(name: str) -> Any:
        return np.concatenate([getattr(p, name) for p in parts])

    return SymbolRows(
        parts[0].symbol,
        cat("timestamp"),
        cat("x"),
        cat("windows"),
        cat("y"),
        cat("target"),
        cat("next_return"),
        cat("change_24h"),
        cat("group"),
    )


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
    return stack_rows(parts, train), stack_rows(parts, test)
