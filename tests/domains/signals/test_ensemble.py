"""Ensemble weights come from measured performance; the confidence is calibrated, sharpened only when that wins
held out."""

import math

import numpy as np
import pytest

from app.domains.signals.ensemble import (
    Ensemble,
    choose_temperature,
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


def test_forecast_probabilities_with_a_predicted_sigma_per_row() -> None:
    """A distributional forecaster's (N, 2) output: each row's own σ; the constant σ argument is not used."""
    forecast = np.array([[0.0, 0.001], [0.0, 0.02], [0.01, 0.005]])
    p = forecast_to_probabilities(forecast, float("nan"), band=0.002)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 1] > 0.9 and p[1, 1] < 0.1  # same mean: a small σ stays inside the band, a large one leaves it
    np.testing.assert_allclose(p[2], forecast_to_probabilities(np.array([0.01]), 0.005, band=0.002)[0])
    with pytest.raises(ValueError, match="positive"):
        forecast_to_probabilities(np.array([0.0]), float("nan"), band=0.002)


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
    assert fit_temperature(np.full((4000, 3), 1 / 3), y) == 1.0  # nothing to soften: T stays 1
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


HOUR = 3_600_000


def claims(y: np.ndarray, skill: float, conf: float, rng: np.random.Generator) -> np.ndarray:
    """Right with probability `skill`, always claiming `conf` for its guess."""
    guess = np.where(rng.random(len(y)) < skill, y, (y + rng.integers(1, 3, len(y))) % 3)
    p = np.full((len(y), 3), (1 - conf) / 2)
    p[np.arange(len(y)), guess] = conf
    return p


def test_sharpening_that_wins_held_out_is_applied() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 5000)
    start = np.arange(5000, dtype=np.int64) * HOUR
    p = claims(y, skill=0.9, conf=0.5, rng=rng)  # underconfident throughout
    t, evidence = choose_temperature(p, y, start, start + 4 * HOUR, embargo_ms=24 * HOUR)
    assert t < 0.5 and evidence["choice"].startswith("sharpened")
    assert all(f["sharpened_log_loss"] < f["soft_log_loss"] for f in evidence["folds"])
    ensemble = Ensemble({"m": 1.0}).calibrated({"m": p}, y, start, start + 4 * HOUR, 24 * HOUR)
    assert ensemble.temperature == t and ensemble.evidence == evidence


def test_sharpening_that_does_not_win_held_out_is_not_applied() -> None:
    """Skill in the oldest rows only: sharpening fits these rows as a whole (T < 1), but fitted on the rows before
    each later block it loses there, so T stays at the softening fit's 1."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 5000)
    start = np.arange(5000, dtype=np.int64) * HOUR
    p = np.vstack([claims(y[:1000], 0.95, 0.4, rng), claims(y[1000:], 1 / 3, 0.35, rng)])
    assert fit_temperature(p, y, sharpen=True) < 0.5  # in-sample, sharpening "wins"
    t, evidence = choose_temperature(p, y, start, start + 4 * HOUR, embargo_ms=24 * HOUR)
    assert t == 1.0 and evidence["choice"] == "soft: sharpening did not win held out"
    assert len(evidence["folds"]) == 4
    ensemble = Ensemble({"m": 1.0}).calibrated({"m": p}, y, start, start + 4 * HOUR, 24 * HOUR)
    assert ensemble.temperature == 1.0
    np.testing.assert_allclose(ensemble.combine({"m": p}), p)  # T = 1 leaves the mix as it is
