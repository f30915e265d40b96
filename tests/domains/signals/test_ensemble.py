"""Ensemble weights come from measured performance; the confidence is calibrated."""

import math

import numpy as np
import pytest

from app.domains.signals.ensemble import (
    Ensemble,
    fit_temperature,
    forecast_to_probabilities,
    log_loss,
    weights_from_losses,
)


def test_forecast_probabilities_follow_the_error_model() -> None:
    p = forecast_to_probabilities(np.array([0.0, 0.01, -0.01]), residual_std=0.005, band=0.002)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(p[0, 2])  # symmetric around a zero forecast
    assert p[1].argmax() == 2 and p[2].argmax() == 0
    assert p[1, 2] == pytest.approx(1 - 0.5 * (1 + math.erf((0.002 - 0.01) / (0.005 * math.sqrt(2)))))


def test_weights_are_improvements_over_the_prior() -> None:
    w = weights_from_losses({"a": 0.9, "b": 0.95, "c": 1.2}, prior_loss=1.0)
    assert w == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 0.0})
    assert weights_from_losses({"a": 1.1}, prior_loss=1.0) == {"a": 0.0}


def test_temperature_fixes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 4000)
    # right 60 % of the time but claims 95 %
    guess = np.where(rng.random(4000) < 0.6, y, (y + 1) % 3)
    p = np.full((4000, 3), 0.025)
    p[np.arange(4000), guess] = 0.95
    t = fit_temperature(p, y)
    assert t > 1.5
    ensemble = Ensemble({"m": 1.0}, t)
    calibrated = ensemble.combine({"m": p})
    assert log_loss(calibrated, y) < log_loss(p, y)
    assert calibrated.max(axis=1).mean() == pytest.approx(0.6, abs=0.05)


def test_fit_vote_and_refusal() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 1000)
    good = np.full((1000, 3), 0.1)
    good[np.arange(1000), y] = 0.8
    useless = np.full((1000, 3), 1 / 3)
    ensemble = Ensemble.fit({"good": good, "useless": useless}, y, prior_loss=log_loss(useless, y))
    assert ensemble.weights == {"good": 1.0, "useless": 0.0}
    vote = ensemble.vote({"good": good[:1], "useless": useless[:1]})[0]
    assert vote.side == ["SHORT", "HOLD", "LONG"][y[0]] and 0 < vote.confidence <= 1
    nothing = Ensemble.fit({"useless": useless}, y, prior_loss=log_loss(useless, y))
    assert not nothing.usable
    with pytest.raises(ValueError, match="prior"):
        nothing.combine({"useless": useless})
