"""Harvest and heat gate: thresholds at and around T1/T2/T3/lock_R for both sides, once-only firing,
the break-even-plus-fees stop and the kill score by hand, the heat gate at K_CLOSE, the default
policy's rule, bounding whatever a policy returns, and a property test over random positions.

Worked positions: entry 100 with the initial stop 2 away (98 long, 102 short), so 1 R = 2 in price
and every threshold below is an exact binary float (R=2 at 104/96, R=1.5 at 103/97, ...).
"""

import logging
import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domains.exits.harvest import (
    K_CLOSE,
    AdaptiveHarvestPolicy,
    Bias,
    HarvestAction,
    HarvestContext,
    HarvestPosition,
    HarvestSettings,
    HarvestState,
    HarvestTheta,
    KillWeights,
    MarketView,
    Proposal,
    bound_k_close,
    bound_theta,
    break_even_stop,
    heat_gate,
    kill_score,
    propose,
    r_multiple,
    resolve_settings,
)
from app.domains.risk.guard import Side
from app.domains.signals.regime import Regime

LOGGER = "app.domains.exits.harvest"
FEE = 0.0004


def position(side: Side, **kw: Any) -> HarvestPosition:
    stop = 98.0 if side is Side.LONG else 102.0
    return HarvestPosition(side=side, entry_price=100.0, initial_stop=stop, amount=3.0, taker_fee_rate=FEE, **kw)


def at_r(side: Side, r: float) -> float:
    """The mark at which the worked position is at `r` R."""
    return 100.0 + (2.0 * r if side is Side.LONG else -2.0 * r)


def actions(proposals: list[Proposal]) -> list[HarvestAction]:
    return [p.action for p in proposals]


SIDES = pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])


# --- R -------------------------------------------------------------------------------------------


def test_r_multiple_by_hand() -> None:
    long, short = position(Side.LONG), position(Side.SHORT)
    assert r_multiple(long, 104.0) == 2.0  # (104 - 100) / 2
    assert r_multiple(long, 97.0) == -1.5
    assert r_multiple(short, 96.0) == 2.0  # -(96 - 100) / 2
    assert r_multiple(short, 103.0) == -1.5
    # the amount cancels: the same R whatever the size
    assert r_multiple(HarvestPosition(Side.LONG, 100.0, 98.0, 0.001), 104.0) == 2.0
    with pytest.raises(ValueError):
        r_multiple(long, 0.0)
    with pytest.raises(ValueError):
        r_multiple(long, math.nan)


@pytest.mark.parametrize(
    ("side", "stop"), [(Side.LONG, 100.0), (Side.LONG, 101.0), (Side.SHORT, 100.0), (Side.SHORT, 99.0)]
)
def test_position_with_wrong_side_initial_stop_refused(side: Side, stop: float) -> None:
    with pytest.raises(ValueError, match="wrong side"):
        HarvestPosition(side, 100.0, stop, 1.0)


@pytest.mark.parametrize("fee", [-0.0001, 0.05, math.inf])
def test_position_fee_out_of_range_refused(fee: float) -> None:
    with pytest.raises(ValueError):
        HarvestPosition(Side.LONG, 100.0, 98.0, 1.0, taker_fee_rate=fee)


# --- partials at and around T1 / T2 / T3 ---------------------------------------------------------


@SIDES
@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (1.99, []),
        (2.0, [HarvestAction.PARTIAL_25]),
        (3.99, [HarvestAction.PARTIAL_25]),
        (4.0, [HarvestAction.PARTIAL_25, HarvestAction.PARTIAL_50]),
        (5.99, [HarvestAction.PARTIAL_25, HarvestAction.PARTIAL_50]),
        (6.0, [HarvestAction.PARTIAL_25, HarvestAction.PARTIAL_50, HarvestAction.PARTIAL_75]),
    ],
)
def test_partials_at_and_around_targets(side: Side, r: float, expected: list[HarvestAction]) -> None:
    proposals, state = propose(position(side), at_r(side, r), HarvestTheta(), HarvestState())
    partials = [p for p in proposals if p.action is not HarvestAction.UPDATE_SL]
    assert actions(partials) == expected
    assert set(expected) <= state.fired
    assert not ({HarvestAction.PARTIAL_25, HarvestAction.PARTIAL_50, HarvestAction.PARTIAL_75} - set(expected)) & (
        state.fired
    )


@SIDES
def test_partials_reduce_to_75_50_25_percent_of_the_original(side: Side) -> None:
    """Cumulative: each step closes 25 % of the original amount and names the remaining target."""
    pos, theta, state = position(side), HarvestTheta(), HarvestState()
    seen: list[Proposal] = []
    for r in (2.0, 4.0, 6.0):
        proposals, state = propose(pos, at_r(side, r), theta, state)
        seen += [p for p in proposals if p.action is not HarvestAction.UPDATE_SL]
    assert [(p.action, p.fraction, p.remaining_fraction) for p in seen] == [
        (HarvestAction.PARTIAL_25, 0.25, 0.75),
        (HarvestAction.PARTIAL_50, 0.25, 0.50),
        (HarvestAction.PARTIAL_75, 0.25, 0.25),
    ]
    # closed in total: 75 % of the original, 25 % left
    assert sum(p.fraction or 0 for p in seen) == 0.75
    assert seen[0].reason.startswith("R=2.00 ≥ T1=2.00")
    assert "T2=4.00" in seen[1].reason and "T3=6.00" in seen[2].reason
    assert "75% of the original" in seen[0].reason


@SIDES
def test_jump_past_t3_fires_every_step_in_order(side: Side) -> None:
    proposals, _ = propose(position(side), at_r(side, 7.0), HarvestTheta(), HarvestState())
    assert actions(proposals) == [
        HarvestAction.UPDATE_SL,
        HarvestAction.PARTIAL_25,
        HarvestAction.PARTIAL_50,
        HarvestAction.PARTIAL_75,
    ]
    assert [p.remaining_fraction for p in proposals[1:]] == [0.75, 0.5, 0.25]


@SIDES
def test_each_proposal_fires_once(side: Side) -> None:
    pos, theta, state = position(side), HarvestTheta(), HarvestState()
    fired: list[HarvestAction] = []
    for r in (0.5, 1.5, 1.6, 2.0, 2.5, 1.0, 2.0, 4.0, 3.0, 4.5, 6.0, 6.0, 8.0, 2.0, 6.5):
        proposals, state = propose(pos, at_r(side, r), theta, state)
        fired += actions(proposals)
    assert sorted(fired) == sorted(
        [
            HarvestAction.UPDATE_SL,
            HarvestAction.PARTIAL_25,
            HarvestAction.PARTIAL_50,
            HarvestAction.PARTIAL_75,
        ]
    )
    assert state.peak_r == 8.0


def test_state_in_state_out_is_pure() -> None:
    pos, theta = position(Side.LONG), HarvestTheta()
    state = HarvestState()
    first, after = propose(pos, 104.0, theta, state)
    again, _ = propose(pos, 104.0, theta, state)  # same state in → same proposals out
    assert first == again
    assert state == HarvestState()  # the input state is untouched
    assert propose(pos, 104.0, theta, after)[0] == []


# --- UPDATE_SL at lock_R: break-even plus fees ---------------------------------------------------


def test_break_even_stop_by_hand() -> None:
    # long: P = E (1 + f) / (1 - f) = 100 * 1.0004 / 0.9996
    assert break_even_stop(side=Side.LONG, entry_price=100.0, taker_fee_rate=0.0004) == pytest.approx(
        100.08003201280512, rel=1e-14
    )
    # short: P = E (1 - f) / (1 + f) = 100 * 0.9996 / 1.0004
    assert break_even_stop(side=Side.SHORT, entry_price=100.0, taker_fee_rate=0.0004) == pytest.approx(
        99.92003198720512, rel=1e-14
    )
    assert break_even_stop(side=Side.LONG, entry_price=100.0, taker_fee_rate=0.0) == 100.0


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
@pytest.mark.parametrize("fee", [0.0, 0.0002, 0.0004, 0.001, 0.01])
def test_break_even_stop_nets_zero_after_both_fees(side: Side, fee: float) -> None:
    entry, amount = 27_345.5, 0.37
    stop = break_even_stop(side=side, entry_price=entry, taker_fee_rate=fee)
    s = 1 if side is Side.LONG else -1
    net = s * (stop - entry) * amount - fee * entry * amount - fee * stop * amount
    assert net == pytest.approx(0.0, abs=1e-8)
    assert stop > 0


@pytest.mark.parametrize("fee", [-0.001, 0.05, math.nan])
def test_break_even_stop_rejects_bad_fee(fee: float) -> None:
    with pytest.raises(ValueError):
        break_even_stop(side=Side.LONG, entry_price=100.0, taker_fee_rate=fee)


@SIDES
def test_update_sl_at_and_around_lock_r(side: Side) -> None:
    pos = position(side)
    below, _ = propose(pos, at_r(side, 1.49), HarvestTheta(), HarvestState())
    assert below == []
    at, state = propose(pos, at_r(side, 1.5), HarvestTheta(), HarvestState())
    assert actions(at) == [HarvestAction.UPDATE_SL]
    expected = 100.08003201280512 if side is Side.LONG else 99.92003198720512
    assert at[0].new_stop == pytest.approx(expected, rel=1e-14)
    assert at[0].fraction is None
    assert at[0].reason.startswith("R=1.50 ≥ lock_R=1.50")
    assert state.fired == {HarvestAction.UPDATE_SL}


@SIDES
def test_update_sl_waits_while_break_even_is_on_the_wrong_side_of_the_mark(side: Side) -> None:
    # 1 R = 0.1 in price, fee 0.1 %: break-even plus fees is 0.2002 from entry, beyond the lock at 0.15
    stop = 99.9 if side is Side.LONG else 100.1
    pos = HarvestPosition(side, 100.0, stop, 1.0, taker_fee_rate=0.001)
    s = 1 if side is Side.LONG else -1
    proposals, state = propose(pos, 100.0 + s * 0.15, HarvestTheta(), HarvestState())
    assert proposals == []
    assert HarvestAction.UPDATE_SL not in state.fired  # still to fire
    proposals, state = propose(pos, 100.0 + s * 0.25, HarvestTheta(), state)
    sl = [p for p in proposals if p.action is HarvestAction.UPDATE_SL]
    assert len(sl) == 1 and sl[0].new_stop is not None
    assert s * (100.0 + s * 0.25 - sl[0].new_stop) > 0


# --- kill score ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "entry", "now", "flip"),
    [
        (Side.LONG, Bias.BULLISH, Bias.BEARISH, 1.0),
        (Side.LONG, Bias.BULLISH, Bias.NEUTRAL, 0.5),
        (Side.LONG, Bias.NEUTRAL, Bias.BEARISH, 0.5),
        (Side.LONG, Bias.BULLISH, Bias.BULLISH, 0.0),
        (Side.LONG, Bias.BEARISH, Bias.BULLISH, 0.0),
        (Side.SHORT, Bias.BEARISH, Bias.BULLISH, 1.0),
        (Side.SHORT, Bias.BEARISH, Bias.NEUTRAL, 0.5),
        (Side.SHORT, Bias.BULLISH, Bias.BEARISH, 0.0),
    ],
)
def test_regime_flip_component(side: Side, entry: Bias, now: Bias, flip: float) -> None:
    k = kill_score(side=side, bias_at_entry=entry, bias_now=now, trend_at_entry=0, trend_now=0, peak_r=0, r_now=0)
    assert k.regime_flip == flip
    assert k.score == pytest.approx(0.4 * flip)


@pytest.mark.parametrize(
    ("at_entry", "now", "drop"), [(30.0, 21.0, 0.3), (30.0, 0.0, 1.0), (30.0, 40.0, 0.0), (0.0, 10.0, 0.0)]
)
def test_trend_drop_component(at_entry: float, now: float, drop: float) -> None:
    k = kill_score(
        side=Side.LONG,
        bias_at_entry=Bias.NEUTRAL,
        bias_now=Bias.NEUTRAL,
        trend_at_entry=at_entry,
        trend_now=now,
        peak_r=0,
        r_now=0,
    )
    assert k.trend_drop == pytest.approx(drop)
    assert k.score == pytest.approx(0.3 * drop)


@pytest.mark.parametrize(
    ("peak", "r", "giveback"),
    [
        (4.0, 1.0, 0.75),  # gave back 3 of 4 R
        (4.0, 4.0, 0.0),
        (4.0, -1.0, 1.0),  # more than the whole peak: clamped
        (0.5, 0.0, 0.5),  # measured against at least 1 R
        (0.0, -0.4, 0.4),  # never rose: the loss in R
        (0.0, -2.0, 1.0),
    ],
)
def test_pnl_giveback_component(peak: float, r: float, giveback: float) -> None:
    k = kill_score(
        side=Side.SHORT,
        bias_at_entry=Bias.NEUTRAL,
        bias_now=Bias.NEUTRAL,
        trend_at_entry=0,
        trend_now=0,
        peak_r=peak,
        r_now=r,
    )
    assert k.pnl_giveback == pytest.approx(giveback)


def test_kill_score_weighted_sum_by_hand() -> None:
    k = kill_score(
        side=Side.LONG,
        bias_at_entry=Bias.BULLISH,
        bias_now=Bias.NEUTRAL,
        trend_at_entry=30.0,
        trend_now=21.0,
        peak_r=4.0,
        r_now=1.0,
    )
    assert (k.regime_flip, k.trend_drop, k.pnl_giveback) == pytest.approx((0.5, 0.3, 0.75))
    assert k.score == pytest.approx(0.4 * 0.5 + 0.3 * 0.3 + 0.3 * 0.75)  # 0.515
    custom = kill_score(
        side=Side.LONG,
        bias_at_entry=Bias.BULLISH,
        bias_now=Bias.NEUTRAL,
        trend_at_entry=30.0,
        trend_now=21.0,
        peak_r=4.0,
        r_now=1.0,
        weights=KillWeights(regime_flip=0.2, trend_drop=0.0, pnl_giveback=0.8),
    )
    assert custom.score == pytest.approx(0.2 * 0.5 + 0.8 * 0.75)  # 0.7


def test_kill_score_maximum_is_one() -> None:
    k = kill_score(
        side=Side.LONG,
        bias_at_entry=Bias.BULLISH,
        bias_now=Bias.BEARISH,
        trend_at_entry=30.0,
        trend_now=0.0,
        peak_r=3.0,
        r_now=-1.0,
    )
    assert k.score == pytest.approx(1.0)


@pytest.mark.parametrize("weights", [(0.5, 0.3, 0.3), (0.4, 0.3, 0.2), (1.2, -0.1, -0.1)])
def test_kill_weights_must_sum_to_one_and_be_non_negative(weights: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        KillWeights(*weights)


# --- FULL_CLOSE_PROPOSED at kill_threshold -------------------------------------------------------


@SIDES
def test_full_close_at_and_around_kill_threshold(side: Side) -> None:
    pos = position(side, trend_at_entry=30.0)
    state = HarvestState(peak_r=4.0)
    # trend gone (0.3) + all of the peak given back (0.3) = 0.6 = kill_threshold
    proposals, after = propose(pos, 100.0, HarvestTheta(), state, market=MarketView(Bias.NEUTRAL, 0.0))
    assert actions(proposals) == [HarvestAction.FULL_CLOSE_PROPOSED]
    full = proposals[0]
    assert full.fraction == 1.0 and full.remaining_fraction == 0.0
    assert full.kill is not None and full.kill.score == pytest.approx(0.6)
    assert "kill_threshold 0.600" in full.reason and "R=0.00" in full.reason
    assert HarvestAction.FULL_CLOSE_PROPOSED in after.fired
    # trend 1 of 30 left: 0.3 * 29/30 + 0.3 = 0.59 < 0.6
    below, after_below = propose(pos, 100.0, HarvestTheta(), state, market=MarketView(Bias.NEUTRAL, 1.0))
    assert below == []
    assert after_below.fired == frozenset()


@SIDES
def test_full_close_fires_once_and_ends_harvesting(side: Side) -> None:
    pos = position(side, bias_at_entry=Bias.BULLISH if side is Side.LONG else Bias.BEARISH, trend_at_entry=30.0)
    adverse = Bias.BEARISH if side is Side.LONG else Bias.BULLISH
    _, state = propose(pos, at_r(side, 1.0), HarvestTheta(), HarvestState(), market=MarketView(adverse, 0.0))
    assert state.fired == {HarvestAction.FULL_CLOSE_PROPOSED}  # 0.4 + 0.3 = 0.7
    again, state = propose(pos, at_r(side, 7.0), HarvestTheta(), state, market=MarketView(adverse, 0.0))
    assert again == []
    assert state.peak_r == 7.0


def test_no_market_view_no_kill_score() -> None:
    pos = position(Side.LONG, trend_at_entry=30.0)
    proposals, _ = propose(pos, 98.5, HarvestTheta(), HarvestState(peak_r=5.0))
    assert proposals == []


def test_peak_r_tracks_the_best_r_and_feeds_the_giveback() -> None:
    pos = position(Side.LONG)
    market = MarketView(Bias.NEUTRAL, 0.0)
    theta = HarvestTheta(kill_threshold=0.3)  # the giveback alone can reach it (0.3 weight)
    _, state = propose(pos, at_r(Side.LONG, 3.0), theta, HarvestState(), market=market)
    assert state.peak_r == 3.0
    proposals, state = propose(pos, at_r(Side.LONG, 1.5), theta, state, market=market)
    assert HarvestAction.FULL_CLOSE_PROPOSED not in actions(proposals)  # gave back half: 0.15
    proposals, _ = propose(pos, at_r(Side.LONG, 0.0), theta, state, market=market)
    assert actions(proposals) == [HarvestAction.FULL_CLOSE_PROPOSED]  # gave back all: 0.3


# --- heat gate -----------------------------------------------------------------------------------


def test_heat_gate_at_and_around_k_close() -> None:
    assert K_CLOSE == 0.65
    at = heat_gate(0.65)
    assert at.close and at.k_close == 0.65
    assert "0.650 ≥ K_CLOSE 0.650" in at.reason
    below = heat_gate(0.649)
    assert not below.close
    assert "< K_CLOSE" in below.reason
    assert heat_gate(1.0).close
    assert not heat_gate(0.0).close
    assert heat_gate(0.5, 0.5).close
    assert not heat_gate(0.49, 0.5).close


@pytest.mark.parametrize("score", [-0.01, 1.01, math.nan])
def test_heat_gate_rejects_a_score_outside_zero_one(score: float) -> None:
    with pytest.raises(ValueError):
        heat_gate(score)


def test_heat_gate_bounds_k_close_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        decision = heat_gate(0.35, 0.1)
    assert decision.k_close == 0.3 and decision.close
    assert any("k_close 0.1" in r.getMessage() and "clamped to 0.3" in r.getMessage() for r in caplog.records)


# --- the default policy --------------------------------------------------------------------------


def resolved(context: HarvestContext) -> HarvestSettings:
    return resolve_settings(AdaptiveHarvestPolicy(), context)


def test_default_policy_neutral_context_is_the_defaults() -> None:
    s = resolved(HarvestContext())
    assert s == HarvestSettings(HarvestTheta(2.0, 4.0, 6.0, 1.5, 0.6), 0.65)


@pytest.mark.parametrize(
    ("context", "targets"),
    [
        (HarvestContext(regime=Regime.TRENDING), (2.5, 5.0, 7.5)),
        (HarvestContext(regime=Regime.RANGING), (1.6, 3.2, 4.8)),
        (HarvestContext(regime=Regime.VOLATILE), (2.0, 4.0, 6.0)),
        (HarvestContext(volatility_ratio=0.5), (2.0, 4.0, 6.0)),  # calm: not narrowed
        (HarvestContext(volatility_ratio=1.5), (2.5, 5.0, 7.5)),
        (HarvestContext(volatility_ratio=2.0), (3.0, 6.0, 9.0)),
        (HarvestContext(volatility_ratio=4.0), (3.0, 6.0, 9.0)),  # widening capped at 1.5x
        (HarvestContext(regime=Regime.RANGING, volatility_ratio=1.5), (2.0, 4.0, 6.0)),  # 0.8 * 1.25
    ],
)
def test_default_policy_targets(context: HarvestContext, targets: tuple[float, float, float]) -> None:
    s = resolved(context)
    assert (s.theta.t1_r, s.theta.t2_r, s.theta.t3_r) == pytest.approx(targets)
    assert s.theta.lock_r == 1.5


@pytest.mark.parametrize(
    ("context", "k_close", "kill"),
    [
        (HarvestContext(exposure=0.0), 0.65, 0.6),
        (HarvestContext(exposure=0.5), 0.65, 0.6),
        (HarvestContext(exposure=0.75), 0.55, 0.5),
        (HarvestContext(exposure=1.0), 0.45, 0.4),
        (HarvestContext(exposure=3.0), 0.45, 0.4),
        (HarvestContext(regime=Regime.VOLATILE), 0.60, 0.55),
        (HarvestContext(regime=Regime.VOLATILE, exposure=1.0), 0.40, 0.35),
    ],
)
def test_default_policy_thresholds(context: HarvestContext, k_close: float, kill: float) -> None:
    s = resolved(context)
    assert s.k_close == pytest.approx(k_close)
    assert s.theta.kill_threshold == pytest.approx(kill)


def test_default_policy_extreme_context_is_clamped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # trending (1.25) at 2x volatility (1.5): T3 = 6 * 1.875 = 11.25 > 10
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        s = resolved(HarvestContext(regime=Regime.TRENDING, volatility_ratio=2.0))
    assert (s.theta.t1_r, s.theta.t2_r, s.theta.t3_r) == pytest.approx((3.75, 7.5, 10.0))
    assert [r.getMessage() for r in caplog.records] == ["harvest t3_r 11.25 out of [0.5, 10.0], clamped to 10.0"]


# --- bounding whatever a policy produces ---------------------------------------------------------


@dataclass(frozen=True)
class RoguePolicy:
    out: HarvestSettings

    def settings(self, context: HarvestContext) -> HarvestSettings:
        return self.out


def test_out_of_range_policy_is_clamped_ordered_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rogue = RoguePolicy(
        HarvestSettings(HarvestTheta(t1_r=0.1, t2_r=20.0, t3_r=3.0, lock_r=0.2, kill_threshold=0.95), 0.1)
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        s = resolve_settings(rogue, HarvestContext())
    assert s.theta == HarvestTheta(t1_r=0.5, t2_r=10.0, t3_r=10.0, lock_r=0.5, kill_threshold=0.9)
    assert s.k_close == 0.3
    messages = [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert messages == [
        "harvest t1_r 0.1 out of [0.5, 10.0], clamped to 0.5",
        "harvest t2_r 20.0 out of [0.5, 10.0], clamped to 10.0",
        "harvest t3_r 3.0 below t2_r 10.0, raised to 10.0",
        "harvest lock_r 0.2 out of [0.5, 10.0], clamped to 0.5",
        "harvest kill_threshold 0.95 out of [0.3, 0.9], clamped to 0.9",
        "harvest k_close 0.1 out of [0.3, 0.9], clamped to 0.3",
    ]


def test_in_range_policy_is_untouched_and_silent(caplog: pytest.LogCaptureFixture) -> None:
    ok = HarvestSettings(HarvestTheta(0.5, 0.5, 10.0, 10.0, 0.3), 0.9)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert resolve_settings(RoguePolicy(ok), HarvestContext()) == ok
    assert caplog.records == []


def test_infinite_values_are_clamped_nan_refused() -> None:
    assert bound_theta(HarvestTheta(t1_r=-math.inf, t2_r=math.inf, t3_r=math.inf)).t3_r == 10.0
    assert bound_k_close(math.inf) == 0.9
    with pytest.raises(ValueError):
        HarvestTheta(t1_r=math.nan)
    with pytest.raises(ValueError):
        bound_k_close(math.nan)


def test_propose_bounds_a_theta_it_is_handed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        # T1 of 0.1 R is raised to 0.5 R: nothing at 0.4 R, the partial at 0.5 R
        low, _ = propose(position(Side.LONG), at_r(Side.LONG, 0.4), HarvestTheta(t1_r=0.1), HarvestState())
        at, _ = propose(position(Side.LONG), at_r(Side.LONG, 0.5), HarvestTheta(t1_r=0.1), HarvestState())
    assert low == []
    assert actions(at) == [HarvestAction.PARTIAL_25]
    assert "T1=0.50" in at[0].reason
    assert any("t1_r 0.1" in r.getMessage() for r in caplog.records)


# --- property: no bad stop, no bad fraction, nothing twice ---------------------------------------

finite = {"allow_nan": False, "allow_infinity": False}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from([Side.LONG, Side.SHORT]),
    entry=st.floats(1e-4, 1e6, **finite),
    risk=st.floats(1e-4, 0.99, **finite),
    fee=st.floats(0.0, 0.0499, **finite),
    moves=st.lists(st.floats(-50.0, 50.0, **finite), min_size=1, max_size=25),
    theta=st.builds(
        HarvestTheta,
        t1_r=st.floats(-5, 20, **finite),
        t2_r=st.floats(-5, 20, **finite),
        t3_r=st.floats(-5, 20, **finite),
        lock_r=st.floats(-5, 20, **finite),
        kill_threshold=st.floats(0, 1.5, **finite),
    ),
    biases=st.lists(st.sampled_from(list(Bias)), min_size=2, max_size=2),
    trends=st.lists(st.floats(0, 100, **finite), min_size=2, max_size=2),
)
def test_property_no_wrong_side_stop_and_fractions_in_range(
    side: Side,
    entry: float,
    risk: float,
    fee: float,
    moves: list[float],
    theta: HarvestTheta,
    biases: list[Bias],
    trends: list[float],
) -> None:
    s = 1 if side is Side.LONG else -1
    stop = entry * (1 - s * risk)  # the initial stop `risk` (a fraction of entry) away, always > 0
    pos = HarvestPosition(side, entry, stop, 1.0, taker_fee_rate=fee, bias_at_entry=biases[0], trend_at_entry=trends[0])
    state = HarvestState()
    seen: list[HarvestAction] = []
    logging.getLogger(LOGGER).disabled = True
    try:
        for move in moves:
            mark = entry + move * abs(entry - stop)  # `move` R away from entry
            if mark <= 0:
                continue
            proposals, state = propose(pos, mark, theta, state, market=MarketView(biases[1], trends[1]))
            for p in proposals:
                seen.append(p.action)
                if p.fraction is not None:
                    assert 0 < p.fraction <= 1
                if p.remaining_fraction is not None:
                    assert 0 <= p.remaining_fraction < 1
                if p.action is HarvestAction.UPDATE_SL:
                    assert p.new_stop is not None
                    assert math.isfinite(p.new_stop) and p.new_stop > 0
                    assert s * (mark - p.new_stop) > 0  # protective side of the mark
                    assert s * (p.new_stop - stop) > 0  # better than the initial stop
                else:
                    assert p.new_stop is None
                    assert p.fraction is not None
    finally:
        logging.getLogger(LOGGER).disabled = False
    assert len(seen) == len(set(seen))  # nothing fires twice
    assert seen.count(HarvestAction.FULL_CLOSE_PROPOSED) <= 1
    if HarvestAction.FULL_CLOSE_PROPOSED in seen:
        assert seen[-1] is HarvestAction.FULL_CLOSE_PROPOSED
