"""The limit stack: strictest layer wins, with its source; sizing and RiskGuard share `max_notional`."""

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from app.domains.governance.policy import LIMITS, PortfolioPolicy
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode, RiskProfile
from app.domains.risk.guard import AccountState, DenialCode, RiskGuard, RiskGuardConfig, SafetyView, Side, TradeIntent
from app.domains.risk.stack import Layer, LayerLimits, max_notional, profile_layer, safety_layer, stack
from app.domains.sizing.policy import SizingConfig, SizingInputs, size_position

PRICE = Decimal(60000)
# The CONSERVATIVE policy's minimum confidence (stricter than NORMAL's), and a confidence NORMAL allows but it refuses.
CONSERVATIVE_MIN_CONFIDENCE = Decimal(str(LIMITS[PortfolioPolicy.CONSERVATIVE].min_confidence))
BETWEEN = (DEFAULT_PROFILES[RiskMode.NORMAL].global_min_confidence + CONSERVATIVE_MIN_CONFIDENCE) / 2
NOW = datetime(2024, 1, 1, tzinfo=UTC)
SIZE_CODES = {
    DenialCode.MAX_RISK_PER_TRADE,
    DenialCode.POSITION_SIZE_CAP,
    DenialCode.HARD_MARGIN_RATIO,
    DenialCode.HARD_POSITION_EQUITY,
    DenialCode.HARD_TOTAL_EXPOSURE,
    DenialCode.MAX_LEVERAGE,
}


def test_the_strictest_layer_wins_and_is_named() -> None:
    """The issue's example: NORMAL (5x, 0.57, 30) under a CONSERVATIVE-like layer (10x, 0.60, 3)."""
    assert DEFAULT_PROFILES[RiskMode.NORMAL].global_min_confidence < CONSERVATIVE_MIN_CONFIDENCE
    conservative = LayerLimits(
        Layer.GOVERNANCE,
        "CONSERVATIVE",
        max_leverage=Decimal(10),
        min_confidence=CONSERVATIVE_MIN_CONFIDENCE,
        max_open_positions=3,
    )
    limits = stack(profile_layer(DEFAULT_PROFILES[RiskMode.NORMAL]), conservative)
    assert (limits.max_leverage.value, limits.max_leverage.by) == (Decimal(5), "profile=NORMAL")
    assert (limits.min_confidence.value, limits.min_confidence.by) == (
        CONSERVATIVE_MIN_CONFIDENCE,
        "governance=CONSERVATIVE",
    )
    assert (limits.max_open_positions.value, limits.max_open_positions.by) == (3, "governance=CONSERVATIVE")
    assert limits.position_size_cap_usd.by == "profile=NORMAL"
    assert limits.new_positions_allowed.value is True


def test_a_layer_that_disables_new_positions_wins_over_one_that_allows_them() -> None:
    closed = LayerLimits(Layer.MODE, "EMERGENCY", new_positions_allowed=False)
    limits = stack(profile_layer(DEFAULT_PROFILES[RiskMode.AGGRESSIVE_SMALL_ACCOUNT]), closed)
    assert (limits.new_positions_allowed.value, limits.new_positions_allowed.by) == (False, "mode=EMERGENCY")


def test_the_governor_multiplier_scales_the_leverage_cap() -> None:
    limits = stack(profile_layer(DEFAULT_PROFILES[RiskMode.NORMAL]), safety_layer("REDUCING", Decimal("0.5")))
    assert limits.leverage_cap == Decimal("2.5")
    assert limits.leverage_multiplier.by == "safety=REDUCING"


def test_a_denial_names_the_binding_layer() -> None:
    guard = RiskGuard()
    profile = DEFAULT_PROFILES[RiskMode.NORMAL]
    confidence = profile.global_min_confidence - Decimal("0.01")
    intent = TradeIntent("BTC/USDT:USDT", Side.LONG, Decimal(100), Decimal(2), PRICE, confidence=confidence)
    account = AccountState(Decimal(10000), 0, Decimal(0), Decimal(0), Decimal(10000))
    decision = guard.check(intent, account, profile, SafetyView(False, "ACTIVE", ""), now=NOW, trace_id="t")
    assert [r.detail for r in decision.reasons] == [
        f"MIN_CONFIDENCE: confidence={confidence} min={profile.global_min_confidence} profile=NORMAL"
    ]


def test_max_notional_names_the_check_that_binds() -> None:
    limits = stack(profile_layer(DEFAULT_PROFILES[RiskMode.NORMAL]))
    roomy = dict(equity=Decimal(10000), used_margin=Decimal(0), leverage=Decimal(5), stop_distance_pct=Decimal(2))
    assert max_notional(limits, open_notional=Decimal(0), **roomy).code == "POSITION_SIZE_CAP"
    exposed = max_notional(limits, open_notional=Decimal(19700), **roomy)
    assert (exposed.code, exposed.value) == ("HARD_TOTAL_EXPOSURE", Decimal(300))
    over = max_notional(limits, open_notional=Decimal(25000), **roomy)
    assert (over.code, over.value) == ("HARD_TOTAL_EXPOSURE", Decimal(0))


Case = tuple[RiskGuard, RiskProfile, SafetyView, AccountState, Decimal, Decimal | None]


def size_denials(
    notional: Decimal,
    guard: RiskGuard,
    profile: RiskProfile,
    safety: SafetyView,
    account: AccountState,
    leverage: Decimal,
    stop_loss: Decimal | None,
) -> set[str]:
    intent = TradeIntent(
        "BTC/USDT:USDT", Side.LONG, notional, leverage, PRICE, confidence=Decimal(1), stop_loss=stop_loss
    )
    decision = guard.check(intent, account, profile, safety, now=NOW, trace_id="t")
    return {r.code for r in decision.reasons} & SIZE_CODES


@pytest.mark.parametrize("seed", range(3))
def test_a_proposed_size_is_never_denied_for_its_size_and_one_cent_more_is(seed: int) -> None:
    """Random account states: open positions and exposure, multiplier 0.5 and 1, a non-default assumed
    stop, every profile. Each case is checked by the RiskGuard configured with the same assumed stop."""
    rng = np.random.default_rng(seed)
    proposed = bound = 0
    for _ in range(700):
        profile = DEFAULT_PROFILES[list(RiskMode)[int(rng.integers(len(RiskMode)))]]
        multiplier = Decimal("0.5") if rng.random() < 0.5 else Decimal(1)
        assumed = Decimal(str(rng.choice(["2", "0.8", "3.5", "6"])))
        guard = RiskGuard(RiskGuardConfig(assumed_stop_distance_pct=assumed))
        safety = SafetyView(False, "REDUCING" if multiplier < 1 else "ACTIVE", "", leverage_multiplier=multiplier)
        limits = guard.limits(profile, safety)
        equity = Decimal(str(round(float(10 ** rng.uniform(2, 5)), 2)))
        open_notional = (equity * Decimal(str(round(float(rng.uniform(0, 2.1)), 4)))).quantize(Decimal("0.01"))
        used_margin = (open_notional / Decimal(int(rng.integers(1, 8)))).quantize(Decimal("0.01"))
        open_positions = int(rng.integers(0, int(profile.max_open_positions)))
        choices = [lev for lev in (Decimal(1), Decimal(2), Decimal(3), Decimal("1.5")) if lev <= limits.leverage_cap]
        leverage = choices[int(rng.integers(len(choices)))]
        stop = None if rng.random() < 0.5 else Decimal(str(round(float(rng.uniform(0.2, 15)), 2)))
        decision = size_position(
            equity,
            PRICE,
            SizingInputs(float(rng.uniform(0.6, 1)), 0.01, 0.0, 0.0),
            limits,
            None,
            SizingConfig(base_fraction=float(rng.uniform(0.01, 1.0))),
            leverage,
            stop,
            open_notional=open_notional,
            used_margin=used_margin,
            assumed_stop_pct=assumed,
        )
        if decision.notional is None:
            continue
        proposed += 1
        account = AccountState(equity, open_positions, open_notional, used_margin, equity)

        stop_loss = None if stop is None else PRICE * (1 - stop / 100)

        def check(notional: Decimal, case: Case = (guard, profile, safety, account, leverage, stop_loss)) -> set[str]:
            return size_denials(notional, *case)

        assert not check(decision.notional), decision
        if decision.limited_by is not None:
            bound += 1
            assert check(decision.notional + Decimal("0.01")), decision
    assert proposed > 300 and bound > 150, (proposed, bound)


def test_sizing_refuses_a_leverage_the_streak_multiplier_forbids() -> None:
    """The old sizing ignored the multiplier and proposed a size RiskGuard then denied (MAX_LEVERAGE)."""
    profile = DEFAULT_PROFILES[RiskMode.NORMAL]
    limits = RiskGuard().limits(profile, SafetyView(False, "REDUCING", "", leverage_multiplier=Decimal("0.5")))
    decision = size_position(
        Decimal(10000),
        PRICE,
        SizingInputs(0.9, 0.01, 0.0, 0.0),
        limits,
        None,
        SizingConfig(),
        Decimal(5),
        None,
    )
    assert decision.skipped_reason is not None and decision.skipped_reason.startswith("LEVERAGE_ABOVE_MAX")
    assert "safety=REDUCING" in decision.skipped_reason


def test_an_added_layer_binds_in_risk_guard_and_is_named() -> None:
    """A governance-like layer plugged into RiskGuard: its stricter confidence and position count win."""
    strict = LayerLimits(
        Layer.GOVERNANCE, "CONSERVATIVE", min_confidence=CONSERVATIVE_MIN_CONFIDENCE, max_open_positions=3
    )
    guard = RiskGuard(layers=[lambda: strict])
    intent = TradeIntent("BTC/USDT:USDT", Side.LONG, Decimal(100), Decimal(2), PRICE, confidence=BETWEEN)
    account = AccountState(Decimal(10000), 3, Decimal(300), Decimal(150), Decimal(10000))
    profile = DEFAULT_PROFILES[RiskMode.NORMAL]
    decision = guard.check(intent, account, profile, SafetyView(False, "ACTIVE", ""), now=NOW, trace_id="t")
    assert [r.detail for r in decision.reasons] == [
        "MAX_OPEN_POSITIONS: open=3 max=3 governance=CONSERVATIVE",
        f"MIN_CONFIDENCE: confidence={BETWEEN} min={CONSERVATIVE_MIN_CONFIDENCE} governance=CONSERVATIVE",
    ]
    assert guard.limits(profile, SafetyView(False, "ACTIVE", "")).max_leverage.by == "profile=NORMAL"
