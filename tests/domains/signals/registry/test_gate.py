"""The promotion gate: both margins at their exact limits, NaN, the baseline when there is no champion, and
training data that overlaps the comparison window."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from app.domains.signals.registry.gate import PromotionMargins, promotion_gate, training_overlap

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


# Neither model may have been trained on the comparison window ------------------------------------

T = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW = (T + timedelta(days=100), T + timedelta(days=130))


def test_training_that_ends_before_the_window_does_not_overlap() -> None:
    assert training_overlap("champion", T, WINDOW[0], *WINDOW) is None
    assert training_overlap("champion", WINDOW[1], WINDOW[1] + timedelta(days=9), *WINDOW) is None


@pytest.mark.parametrize(
    "start,end",
    [
        (T, WINDOW[0] + timedelta(hours=1)),  # ends inside
        (T + timedelta(days=110), T + timedelta(days=120)),  # inside
        (T + timedelta(days=120), T + timedelta(days=200)),  # starts inside
        (T, T + timedelta(days=200)),  # covers it
    ],
)
def test_training_inside_the_window_overlaps(start: datetime, end: datetime) -> None:
    reason = training_overlap("champion abc", start, end, *WINDOW)
    assert reason is not None and reason.startswith("champion abc was trained on") and "not out of sample" in reason


def test_labels_that_look_into_the_window_overlap() -> None:
    end = WINDOW[0] - timedelta(hours=2)
    assert training_overlap("candidate", T, end, *WINDOW) is None
    reason = training_overlap("candidate", T, end, *WINDOW, label_reach=timedelta(hours=4))
    assert reason is not None and "2025-04-11 02:00" in reason  # the last label's candle
