"""The promotion gate: both margins at their exact limits, NaN, and the baseline when there is no champion."""

import math

import pytest

from app.domains.signals.registry.gate import PromotionMargins, promotion_gate

MARGINS = PromotionMargins(log_loss=0.002, net_return=0.01)
CHAMPION = {"log_loss": 0.82, "net_return": 0.005}
BASELINE = {"log_loss": 1.0986, "net_return": 0.0}


def at_limit() -> dict[str, float]:
    """Exactly as good as the margins demand (same float arithmetic as the gate)."""
    return {
        "log_loss": CHAMPION["log_loss"] - MARGINS.log_loss,
        "net_return": CHAMPION["net_return"] + MARGINS.net_return,
    }


def test_exactly_at_both_limits_promotes() -> None:
    promoted, reason = promotion_gate(at_limit(), CHAMPION, BASELINE, MARGINS)
    assert promoted, reason
    assert reason.count(": ok") == 2


def test_log_loss_just_short_of_the_margin_is_rejected() -> None:
    candidate = at_limit()
    candidate["log_loss"] = math.nextafter(candidate["log_loss"], math.inf)
    promoted, reason = promotion_gate(candidate, CHAMPION, BASELINE, MARGINS)
    assert not promoted
    assert "log_loss" in reason and "): worse; net_return" in reason


def test_net_return_just_short_of_the_margin_is_rejected() -> None:
    candidate = at_limit()
    candidate["net_return"] = math.nextafter(candidate["net_return"], -math.inf)
    promoted, reason = promotion_gate(candidate, CHAMPION, BASELINE, MARGINS)
    assert not promoted
    assert reason.endswith("): worse")
    assert "): ok; net_return" in reason


def test_better_log_loss_alone_is_not_enough() -> None:
    candidate = {"log_loss": 0.70, "net_return": -0.01}
    promoted, _ = promotion_gate(candidate, CHAMPION, BASELINE, MARGINS)
    assert not promoted


def test_reason_states_both_comparisons_with_the_numbers() -> None:
    candidate = {"log_loss": 0.8123, "net_return": -0.01}
    _, reason = promotion_gate(candidate, CHAMPION, BASELINE, PromotionMargins(log_loss=0.002, net_return=0.0))
    assert reason == (
        "log_loss 0.8123 vs champion 0.8200 (needs <= 0.8180): ok; "
        "net_return -0.0100 vs champion 0.0050 (needs >= 0.0050): worse"
    )


def test_no_incumbent_compares_with_the_baseline() -> None:
    candidate = {"log_loss": 1.05, "net_return": 0.02}
    promoted, reason = promotion_gate(candidate, None, BASELINE, MARGINS)
    assert promoted, reason
    assert "vs baseline 1.0986" in reason and "vs baseline 0.0000" in reason
    assert "champion" not in reason


def test_no_incumbent_and_no_better_than_the_baseline_is_rejected() -> None:
    candidate = {"log_loss": 1.2, "net_return": 0.02}
    promoted, reason = promotion_gate(candidate, None, BASELINE, MARGINS)
    assert not promoted
    assert "log_loss 1.2000 vs baseline 1.0986 (needs <= 1.0966): worse" in reason


@pytest.mark.parametrize("metric", ["log_loss", "net_return"])
def test_nan_candidate_is_never_promoted(metric: str) -> None:
    candidate = {"log_loss": 0.1, "net_return": 1.0, metric: math.nan}
    promoted, reason = promotion_gate(candidate, CHAMPION, BASELINE, MARGINS)
    assert not promoted
    assert "NaN" in reason and f"candidate {metric}" in reason


def test_nan_champion_metric_is_never_a_reason_to_promote() -> None:
    champion = {"log_loss": math.nan, "net_return": 0.0}
    promoted, reason = promotion_gate({"log_loss": 0.1, "net_return": 1.0}, champion, BASELINE, MARGINS)
    assert not promoted
    assert "champion log_loss" in reason


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_margins_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="margin"):
        PromotionMargins(log_loss=bad)
    with pytest.raises(ValueError, match="margin"):
        PromotionMargins(net_return=bad)
