"""Metrics are computed exactly (trading rules: `test_backtest`; purged splits: `signals/test_meta`)."""

import math

import numpy as np
import pytest

from app.domains.learning.evaluation import classification_metrics, prior_probabilities


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
