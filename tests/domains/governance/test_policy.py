"""The policy score, the table at and around each threshold, MIN_SAMPLES and hysteresis."""

import pytest

from app.domains.governance.memory import MemorySummary
from app.domains.governance.policy import LIMITS, PolicyConfig, PolicyLimits, PortfolioPolicy, decide, score
from tests.support import default_plan_breakeven

C, B, A = PortfolioPolicy.CONSERVATIVE, PortfolioPolicy.BALANCED, PortfolioPolicy.AGGRESSIVE
CONFIG = PolicyConfig(min_samples=50, conservative_threshold=0.3, aggressive_threshold=0.7, hysteresis=0.05)


def summary(value: float, count: int = 100) -> MemorySummary:
    """A summary whose score is exactly `value` (confidence, win rate and volatility 1)."""
    return MemorySummary(count, value, 1.0, 1.0, 5.0, 1.0, count, count)


def test_score_formula_and_volatility_floor() -> None:
    s = MemorySummary(60, 0.32, 0.72, 0.6, 20.0, 0.6, 60, 60)
    assert score(s) == pytest.approx(0.32 * 0.72 * 0.6 / 0.6)
    tiny = MemorySummary(60, 0.5, 0.8, 0.001, 20.0, 0.5, 60, 60)
    assert score(tiny) == pytest.approx(0.5 * 0.8 * 0.5 / 0.01)
    assert score(MemorySummary(60, 0.5, 0.8, None, 20.0, 0.5, 60, 0)) is None


def test_the_table() -> None:
    assert LIMITS[C] == PolicyLimits(10, 0.60, 3)
    assert LIMITS[B] == PolicyLimits(20, 0.57, 5)
    assert LIMITS[A] == PolicyLimits(30, 0.55, 7)


def test_min_confidences_are_above_the_breakeven_and_stricter_policies_never_looser() -> None:
    """min_confidence is a calibrated P(TP1 before the stop), the profiles' scale: above the default plan's
    breakeven, and CONSERVATIVE >= BALANCED >= AGGRESSIVE."""
    breakeven = default_plan_breakeven()
    assert all(limits.min_confidence > breakeven for limits in LIMITS.values())
    assert LIMITS[C].min_confidence >= LIMITS[B].min_confidence >= LIMITS[A].min_confidence


@pytest.mark.parametrize(
    ("value", "expected"),
    [(-1.0, C), (0.0, C), (0.2999, C), (0.3, B), (0.3001, B), (0.5, B), (0.6999, B), (0.7, B), (0.7001, A), (5.0, A)],
)
def test_policy_at_and_around_each_threshold_without_a_previous_policy(value: float, expected: PortfolioPolicy) -> None:
    decision = decide(None, summary(value), CONFIG)
    assert decision.policy is expected
    assert decision.score == pytest.approx(value)
    assert decision.limits == LIMITS[expected]


def test_below_min_samples_the_policy_is_balanced_and_says_why() -> None:
    for previous in (None, B, A):
        decision = decide(previous, summary(5.0, count=49), CONFIG)
        assert decision.policy is B
        assert "insufficient samples: 49 < MIN_SAMPLES 50" in decision.reason
        assert "BALANCED until then" in decision.reason
    assert decide(None, summary(5.0, count=50), CONFIG).policy is A


def test_without_evidence_a_conservative_policy_is_never_loosened() -> None:
    """A restart whose window lost its events (a trimmed stream) keeps CONSERVATIVE, saying why."""
    decision = decide(C, summary(5.0, count=49), CONFIG)
    assert decision.policy is C
    assert "insufficient samples: 49 < MIN_SAMPLES 50" in decision.reason
    assert "never loosened without evidence" in decision.reason
    undefined = decide(C, MemorySummary(100, 1.0, 1.0, None, 5.0, 1.0, 100, 0), CONFIG)
    assert undefined.policy is C and "volatility" in undefined.reason
    # With evidence it leaves CONSERVATIVE as usual.
    assert decide(C, summary(5.0, count=50), CONFIG).policy is A


def test_unknown_volatility_keeps_balanced_with_the_reason() -> None:
    decision = decide(A, MemorySummary(100, 1.0, 1.0, None, 5.0, 1.0, 100, 0), CONFIG)
    assert decision.policy is B and decision.score is None and "volatility" in decision.reason


@pytest.mark.parametrize(
    ("previous", "value", "expected"),
    [
        # CONSERVATIVE leaves only at score >= 0.3 + 0.05
        (C, 0.3, C),
        (C, 0.3499, C),
        (C, 0.35, B),
        (C, 0.71, A),
        # AGGRESSIVE leaves only at score <= 0.7 - 0.05
        (A, 0.7, A),
        (A, 0.6501, A),
        (A, 0.65, B),
        (A, 0.1, C),
        # BALANCED leaves below 0.3 - 0.05 or above 0.7 + 0.05
        (B, 0.2999, B),
        (B, 0.25, B),
        (B, 0.2499, C),
        (B, 0.7001, B),
        (B, 0.75, B),
        (B, 0.7501, A),
    ],
)
def test_hysteresis(previous: PortfolioPolicy, value: float, expected: PortfolioPolicy) -> None:
    decision = decide(previous, summary(value), CONFIG)
    assert decision.policy is expected, decision.reason
    assert decision.inputs["previous"] == previous.value


def test_a_score_hovering_at_a_threshold_does_not_flap() -> None:
    policy = None
    seen = []
    for value in [0.72, 0.69, 0.71, 0.68, 0.70, 0.66, 0.72]:
        policy = decide(policy, summary(value), CONFIG).policy
        seen.append(policy)
    assert seen == [A] * 7
    held = decide(A, summary(0.69), CONFIG)
    assert "held" in held.reason and "hysteresis 0.05" in held.reason


@pytest.mark.parametrize(
    "kwargs",
    [{"conservative_threshold": 0.7, "aggressive_threshold": 0.3}, {"hysteresis": 0.2}, {"hysteresis": -0.1}],
)
def test_invalid_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PolicyConfig(**kwargs)  # type: ignore[arg-type]
