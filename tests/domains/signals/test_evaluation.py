"""Walk-forward splits never leak; metrics and the fee-paying rule are computed exactly."""

import math

import numpy as np
import pytest

from app.domains.signals.candles import Candles, Funding
from app.domains.signals.evaluation import (
    build_dataset,
    classification_metrics,
    concat,
    prior_probabilities,
    rule_metrics,
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


def test_rule_pays_fees_on_every_change() -> None:
    positions = np.array([1.0, 1.0, -1.0, 0.0])
    next_return = np.log(np.array([1.01, 0.98, 0.99, 1.05]))
    m = rule_metrics(positions, next_return, fee_rate=0.0004)
    net = np.array([0.01 - 0.0004, -0.02, 0.01 - 0.0008, -0.0004])
    assert m["net_return"] == pytest.approx(np.prod(1 + net) - 1)
    assert m["turnover"] == 4.0
    assert m["exposure"] == 0.75


def test_prior_is_training_frequencies() -> None:
    p = prior_probabilities(np.array([0, 1, 1, 2]), 3)
    np.testing.assert_allclose(p, [[0.25, 0.5, 0.25]] * 3)


def test_several_symbols_split_capital_and_count_turnover_per_symbol() -> None:
    # two symbols interleaved by time, each held LONG throughout: one entry fee each, no flips
    timestamp = np.array([0, 0, 1, 1, 2, 2], dtype=np.int64)
    group = np.array([0, 1, 0, 1, 0, 1], dtype=np.int64)
    positions = np.ones(6)
    returns = np.log(np.array([1.02, 1.00, 1.01, 0.99, 1.00, 1.03]))
    m = rule_metrics(positions, returns, fee_rate=0.001, group=group, timestamp=timestamp)
    per_period = [(0.02 - 0.001 + 0.0 - 0.001) / 2, (0.01 - 0.01) / 2, (0.0 + 0.03) / 2]
    assert m["net_return"] == pytest.approx(np.prod(1 + np.array(per_period)) - 1)
    assert m["turnover"] == 1.0  # one unit per symbol, averaged
