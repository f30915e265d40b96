"""Walk-forward splits never leak; metrics are computed exactly (trading rules: `test_backtest`)."""

import math

import numpy as np
import pytest

from app.domains.markets.candles import Candles, Funding
from app.domains.signals.evaluation import (
    build_dataset,
    classification_metrics,
    concat,
    prior_probabilities,
    walk_forward_splits,
)
from app.domains.signals.features import WARMUP

HOUR = 3_600_000


def test_splits_are_ordered_embargoed_and_disjoint() -> None:
    timestamp = np.arange(1000, dtype=np.int64) * HOUR
    splits = walk_forward_splits(timestamp, n_folds=4, test_fraction=0.4, embargo_ms=24 * HOUR)
    assert len(splits) == 4
    for split in splits:
        assert timestamp[split.train].max() + 24 * HOUR < timestamp[split.test].min()
        assert not set(split.train) & set(split.test)
    tests = np.concatenate([s.test for s in splits])
    assert len(tests) == len(set(tests.tolist()))
    assert tests.min() >= 600 - 1


def test_dataset_rows_are_valid_and_labelled(btc_candles: Candles, btc_funding: Funding) -> None:
    data = build_dataset(btc_candles, btc_funding, horizon=4, band=0.002)
    assert len(data.y) == len(btc_candles) - WARMUP - 4
    assert np.isfinite(data.x).all() and set(np.unique(data.y)) == {0, 1, 2}
    both = concat([data, data])
    assert (np.diff(both.timestamp) >= 0).all() and len(both.y) == 2 * len(data.y)


def test_classification_metrics_exact() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 1])
    m = classification_metrics(p, y)
    assert m["accuracy"] == 0.5
    assert m["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.1)) / 2)
    assert m["brier"] == pytest.approx(((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2)) / 2)


def test_prior_is_training_frequencies() -> None:
    p = prior_probabilities(np.array([0, 1, 1, 2]), 3)
    np.testing.assert_allclose(p, [[0.25, 0.5, 0.25]] * 3)
