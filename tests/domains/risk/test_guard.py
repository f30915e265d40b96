"""RiskGuard.check: every check exactly at its boundary, for each default profile.

Each test starts from a trade that passes every check (`intent()` / `account()`) and changes
one thing. Equity is large (100 000 USDT) so the hard limits stay out of the way unless a test
targets them, and a 1% stop keeps the risk per trade far below every profile's limit.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode, RiskProfile, effective_profile
from app.domains.risk.guard import (
    AccountState,
    DenialCode,
    Reason,
    RiskDecision,
    RiskGuard,
    RiskGuardConfig,
    SafetyView,
    Side,
    TradeIntent,
)
from app.domains.risk.limits import HARD_LIMITS, HardLimits

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
STEP = Decimal("0.0001")
EQUITY = Decimal(100_000)
SYMBOL = "BTC/USDT:USDT"
TRACE = "trace-test"

GUARD = RiskGuard()
NO_BUFFER = RiskGuard(RiskGuardConfig(liquidation_buffer_pct=Decimal(0)))
ACTIVE = SafetyView(halted=False, state="ACTIVE", reason="ok")
NO_STOP_ASSUMPTION = "no stop_loss given: assumed a 2% stop distance"


@dataclass(frozen=True)
class Limits:
    """A default profile's limits, spelled as they appear in denial details."""

    max_leverage: str
    max_risk_pct: str
    max_daily_drawdown_pct: str
    max_open_positions: int
    position_size_cap_usd: str
    min_confidence: str


def _min_confidence(mode: RiskMode) -> str:
    """The profile's minimum confidence as a denial spells it (its values are pinned in test_profiles)."""
    return str(DEFAULT_PROFILES[mode].global_min_confidence)


LIMITS = {
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: Limits(
        "7", "3.0", "6.0", 15, "300", _min_confidence(RiskMode.AGGRESSIVE_SMALL_ACCOUNT)
    ),
    RiskMode.NORMAL: Limits("5", "1.5", "5.0", 30, "1000", _min_confidence(RiskMode.NORMAL)),
    RiskMode.DEFENSIVE: Limits("3", "0.75", "3.0", 10, "500", _min_confidence(RiskMode.DEFENSIVE)),
}

per_mode = pytest.mark.parametrize("mode", list(RiskMode), ids=str)


def intent(**changes: Any) -> TradeIntent:
    """A trade every default profile allows: 100 USDT at 2x, 1% stop, fresh price, high confidence."""
    base = TradeIntent(
        symbol=SYMBOL,
        side=Side.LONG,
        notional=Decimal(100),
        leverage=Decimal(2),
        price=Decimal(100),
        price_as_of=NOW,
        confidence=Decimal("0.9"),
        stop_loss=Decimal(99),
        source="test",
    )
    return replace(base, **changes)


def account(**changes: Any) -> AccountState:
    base = AccountState(
        equity=EQUITY,
        open_positions=0,
        open_notional=Decimal(0),
        used_margin=Decimal(0),
        day_start_equity=EQUITY,
    )
    return replace(base, **changes)


def check(
    profile: RiskProfile | RiskMode,
    trade: TradeIntent | None = None,
    acct: AccountState | None = None,
    safety: SafetyView = ACTIVE,
    guard: RiskGuard = GUARD,
    **kwargs: Any,
) -> RiskDecision:
    if isinstance(profile, RiskMode):
        profile = DEFAULT_PROFILES[profile]
    return guard.check(
        trade or intent(),
        acct or account(),
        profile,
        safety,
        now=kwargs.pop("now", NOW),
        trace_id=TRACE,
        **kwargs,
    )


def assert_allowed(decision: RiskDecision) -> None:
    assert decision.reasons == ()
    assert decision.allowed is True


def assert_denied(decision: RiskDecision, *expected: tuple[DenialCode, str]) -> None:
    """Denied with exactly these reasons, in this order."""
    assert [(r.code, r.detail) for r in decision.reasons] == list(expected)
    assert decision.allowed is False


# --- the baseline -------------------------------------------------------------------------


@per_mode
def test_baseline_trade_is_allowed_without_reasons_or_assumptions(mode: RiskMode) -> None:
    decision = check(mode)

    assert_allowed(decision)
    assert decision.assumptions == ()
    assert decision.profile_name == mode.value
    assert decision.trace_id == TRACE
    assert decision.risk_pct == Decimal("0.001")  # 100 * 1/100 = 1 USDT of 100 000
    assert decision.max_leverage == Decimal(LIMITS[mode].max_leverage)


def test_reason_as_dict() -> None:
    reason = Reason(DenialCode.MAX_LEVERAGE, "MAX_LEVERAGE: requested=6 max=5 profile=NORMAL")
    assert reason.as_dict() == {"code": "MAX_LEVERAGE", "detail": "MAX_LEVERAGE: requested=6 max=5 profile=NORMAL"}


# --- leverage -----------------------------------------------------------------------------


@per_mode
def test_leverage_at_profile_max_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, intent(leverage=Decimal(LIMITS[mode].max_leverage))))


@per_mode
def test_leverage_above_profile_max_is_denied(mode: RiskMode) -> None:
    limit = LIMITS[mode].max_leverage
    requested = Decimal(limit) + STEP

    assert_denied(
        check(mode, intent(leverage=requested)),
        (DenialCode.MAX_LEVERAGE, f"MAX_LEVERAGE: requested={requested} max={limit} profile={mode}"),
    )


def test_leverage_detail_example() -> None:
    assert_denied(
        check(RiskMode.NORMAL, intent(leverage=Decimal(6))),
        (DenialCode.MAX_LEVERAGE, "MAX_LEVERAGE: requested=6 max=5 profile=NORMAL"),
    )


HALVED = {RiskMode.AGGRESSIVE_SMALL_ACCOUNT: "3.5", RiskMode.NORMAL: "2.5", RiskMode.DEFENSIVE: "1.5"}
REDUCING = SafetyView(halted=False, state="REDUCING", reason="losing streak", leverage_multiplier=Decimal("0.5"))


@per_mode
def test_streak_multiplier_halves_max_leverage(mode: RiskMode) -> None:
    halved = HALVED[mode]

    at_limit = check(mode, intent(leverage=Decimal(halved)), safety=REDUCING)
    assert_allowed(at_limit)
    assert at_limit.max_leverage == Decimal(halved)

    requested = Decimal(halved) + STEP
    assert_denied(
        check(mode, intent(leverage=requested), safety=REDUCING),
        (
            DenialCode.MAX_LEVERAGE,
            f"MAX_LEVERAGE: requested={requested} max={halved} (streak multiplier 0.5 safety=REDUCING) profile={mode}",
        ),
    )
    # The profile's own maximum is no longer enough.
    full = LIMITS[mode].max_leverage
    assert [r.code for r in check(mode, intent(leverage=Decimal(full)), safety=REDUCING).reasons] == [
        DenialCode.MAX_LEVERAGE
    ]


@per_mode
def test_hard_max_leverage_125(mode: RiskMode) -> None:
    profile = effective_profile(mode, {"max_leverage": Decimal(125)})
    # At 125x an isolated long is liquidated 0.4 % below entry, inside the default 0.5 % buffer (so
    # STOP_BEYOND_LIQUIDATION refuses every stop); without a buffer a 0.15 % stop is valid.
    guard = RiskGuard(RiskGuardConfig(liquidation_buffer_pct=Decimal(0)))
    tight = Decimal("99.85")

    assert_allowed(check(profile, intent(leverage=Decimal(125), stop_loss=tight), guard=guard))
    assert [r.code for r in check(profile, intent(leverage=Decimal(125), stop_loss=tight)).reasons] == [
        DenialCode.STOP_BEYOND_LIQUIDATION
    ]

    requested = Decimal(125) + STEP
    assert_denied(
        check(profile, intent(leverage=requested, stop_loss=tight), guard=guard),
        (DenialCode.MAX_LEVERAGE, f"MAX_LEVERAGE: requested={requested} max=125 profile={mode}"),
        (DenialCode.HARD_MAX_LEVERAGE, f"HARD_MAX_LEVERAGE: requested={requested} hard_max=125"),
        (
            DenialCode.LEVERAGE_TIER,
            f"LEVERAGE_TIER: requested={requested} max=125 for notional=100 (tier 1 of BTC/USDT:USDT)",
        ),
    )


@per_mode
def test_profile_validation_caps_max_leverage_at_the_hard_limit(mode: RiskMode) -> None:
    with pytest.raises(ValidationError):
        effective_profile(mode, {"max_leverage": Decimal(125) + STEP})


def test_hard_max_leverage_holds_for_a_profile_that_skipped_validation() -> None:
    rogue = DEFAULT_PROFILES[RiskMode.NORMAL].model_copy(update={"max_leverage": Decimal(1000)})

    assert_denied(
        check(rogue, intent(leverage=Decimal(126), stop_loss=Decimal("99.85")), guard=NO_BUFFER),
        (DenialCode.HARD_MAX_LEVERAGE, "HARD_MAX_LEVERAGE: requested=126 hard_max=125"),
        (DenialCode.LEVERAGE_TIER, "LEVERAGE_TIER: requested=126 max=125 for notional=100 (tier 1 of BTC/USDT:USDT)"),
    )


# --- risk per trade -----------------------------------------------------------------------

# Equity 1 000, notional 200 at price 100: risk_pct = stop distance / 5.
RISK_EQUITY = Decimal(1000)
RISK_CASES = {
    # mode: (stop distance that lands exactly on the limit, risk_pct / loss one step beyond,
    # shown rounded away from the limit)
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: (Decimal(15), "3.0001", "30.0002"),
    RiskMode.NORMAL: (Decimal("7.5"), "1.5001", "15.0002"),
    RiskMode.DEFENSIVE: (Decimal("3.75"), "0.7501", "7.5002"),
}


def risk_trade(side: Side, distance: Decimal) -> tuple[TradeIntent, AccountState]:
    price = Decimal(100)
    stop = price - distance if side is Side.LONG else price + distance
    return (
        intent(side=side, notional=Decimal(200), price=price, stop_loss=stop),
        account(equity=RISK_EQUITY, day_start_equity=RISK_EQUITY),
    )


@per_mode
@pytest.mark.parametrize("side", list(Side), ids=str)
def test_risk_per_trade_at_limit_passes(mode: RiskMode, side: Side) -> None:
    distance, _, _ = RISK_CASES[mode]
    decision = check(mode, *risk_trade(side, distance))

    assert_allowed(decision)
    assert decision.risk_pct == Decimal(LIMITS[mode].max_risk_pct)


@per_mode
@pytest.mark.parametrize("side", list(Side), ids=str)
def test_risk_per_trade_above_limit_is_denied(mode: RiskMode, side: Side) -> None:
    distance, risk, loss = RISK_CASES[mode]
    decision = check(mode, *risk_trade(side, distance + STEP))

    assert_denied(
        decision,
        (
            DenialCode.MAX_RISK_PER_TRADE,
            f"MAX_RISK_PER_TRADE: risk_pct={risk} max={LIMITS[mode].max_risk_pct} "
            f"loss_at_stop={loss} equity=1000 profile={mode}",
        ),
    )
    assert decision.risk_pct == Decimal(LIMITS[mode].max_risk_pct) + STEP / 5


def test_no_stop_assumes_a_two_percent_stop_distance() -> None:
    decision = check(RiskMode.NORMAL, intent(notional=Decimal(1000), stop_loss=None))

    assert_allowed(decision)
    assert decision.risk_pct == Decimal("0.02")  # 2% of 1 000 = 20 USDT of 100 000
    assert decision.assumptions == (NO_STOP_ASSUMPTION,)


# Without a stop, risk = 2 * notional / equity %, while the hard limit keeps notional <= 50% of
# equity: the profile limits of 3% and 1.5% cannot be reached inside the hard limit. To test the
# profile check alone, this guard loosens the two hard notional limits (tested further below).
PROFILE_ONLY = RiskGuard(
    RiskGuardConfig(hard=HardLimits(max_position_equity_pct=Decimal(1000), max_total_exposure_pct=Decimal(1000)))
)
# Notional 150 without a stop loses 3 USDT: the equity that makes that exactly the limit.
NO_STOP_EQUITY = {
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: (Decimal(100), "3.0001"),
    RiskMode.NORMAL: (Decimal(200), "1.5001"),
    RiskMode.DEFENSIVE: (Decimal(400), "0.7501"),
}


@per_mode
def test_risk_per_trade_without_stop_at_limit_passes(mode: RiskMode) -> None:
    equity, _ = NO_STOP_EQUITY[mode]
    decision = check(
        mode,
        intent(notional=Decimal(150), stop_loss=None),
        account(equity=equity, day_start_equity=equity),
        guard=PROFILE_ONLY,
    )

    assert_allowed(decision)
    assert decision.risk_pct == Decimal(LIMITS[mode].max_risk_pct)
    assert decision.assumptions == (NO_STOP_ASSUMPTION,)


@per_mode
def test_risk_per_trade_without_stop_above_limit_is_denied(mode: RiskMode) -> None:
    equity, risk = NO_STOP_EQUITY[mode]
    decision = check(
        mode,
        intent(notional=Decimal(150) + STEP, stop_loss=None),
        account(equity=equity, day_start_equity=equity),
        guard=PROFILE_ONLY,
    )

    assert_denied(
        decision,
        (
            DenialCode.MAX_RISK_PER_TRADE,
            f"MAX_RISK_PER_TRADE: risk_pct={risk} max={LIMITS[mode].max_risk_pct} "
            f"loss_at_stop=3.0001 equity={equity} profile={mode}",
        ),
    )
    assert decision.assumptions == (NO_STOP_ASSUMPTION,)


# --- position size cap, open positions ----------------------------------------------------


@per_mode
def test_notional_at_position_size_cap_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, intent(notional=Decimal(LIMITS[mode].position_size_cap_usd))))


@per_mode
def test_notional_above_position_size_cap_is_denied(mode: RiskMode) -> None:
    cap = LIMITS[mode].position_size_cap_usd
    notional = Decimal(cap) + STEP

    assert_denied(
        check(mode, intent(notional=notional)),
        (DenialCode.POSITION_SIZE_CAP, f"POSITION_SIZE_CAP: notional={notional} cap={cap} profile={mode}"),
    )


@per_mode
def test_one_below_max_open_positions_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, acct=account(open_positions=LIMITS[mode].max_open_positions - 1)))


@per_mode
@pytest.mark.parametrize("extra", [0, 1, 50])
def test_at_or_above_max_open_positions_is_denied(mode: RiskMode, extra: int) -> None:
    limit = LIMITS[mode].max_open_positions
    open_positions = limit + extra

    assert_denied(
        check(mode, acct=account(open_positions=open_positions)),
        (
            DenialCode.MAX_OPEN_POSITIONS,
            f"MAX_OPEN_POSITIONS: open={open_positions} max={limit} profile={mode}",
        ),
    )


# --- daily drawdown -----------------------------------------------------------------------

DRAWDOWN_EQUITY = {  # equity at exactly the daily drawdown limit from 100 000
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: Decimal(94_000),
    RiskMode.NORMAL: Decimal(95_000),
    RiskMode.DEFENSIVE: Decimal(97_000),
}


@per_mode
def test_daily_drawdown_just_below_limit_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, acct=account(equity=DRAWDOWN_EQUITY[mode] + STEP)))


@per_mode
def test_daily_drawdown_at_limit_is_denied(mode: RiskMode) -> None:
    limit = LIMITS[mode].max_daily_drawdown_pct

    assert_denied(
        check(mode, acct=account(equity=DRAWDOWN_EQUITY[mode])),
        (
            DenialCode.DAILY_DRAWDOWN,
            f"DAILY_DRAWDOWN: drawdown_pct={Decimal(limit):.4f} max={limit} profile={mode}",
        ),
    )


@per_mode
def test_equity_above_day_start_is_no_drawdown(mode: RiskMode) -> None:
    assert_allowed(check(mode, acct=account(equity=EQUITY * 2)))


# --- confidence ---------------------------------------------------------------------------


@per_mode
def test_confidence_at_minimum_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, intent(confidence=Decimal(LIMITS[mode].min_confidence))))


@per_mode
def test_confidence_below_minimum_is_denied(mode: RiskMode) -> None:
    minimum = LIMITS[mode].min_confidence
    confidence = Decimal(minimum) - STEP

    assert_denied(
        check(mode, intent(confidence=confidence)),
        (
            DenialCode.MIN_CONFIDENCE,
            f"MIN_CONFIDENCE: confidence={confidence} min={minimum} profile={mode}",
        ),
    )


@per_mode
def test_missing_confidence_is_denied(mode: RiskMode) -> None:
    assert_denied(
        check(mode, intent(confidence=None)),
        (DenialCode.CONFIDENCE_MISSING, f"CONFIDENCE_MISSING: profile={mode} requires a confidence"),
    )


# --- price freshness ----------------------------------------------------------------------

MICROSECOND = timedelta(microseconds=1)


@per_mode
def test_price_exactly_60s_old_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, intent(price_as_of=NOW - timedelta(seconds=60))))


@per_mode
def test_price_older_than_60s_is_denied(mode: RiskMode) -> None:
    assert_denied(
        check(mode, intent(price_as_of=NOW - timedelta(seconds=60) - MICROSECOND)),
        (DenialCode.STALE_PRICE, "STALE_PRICE: age_s=60.001 max_s=60.0"),
    )


@per_mode
def test_price_5s_in_the_future_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, intent(price_as_of=NOW + timedelta(seconds=5))))


@per_mode
def test_price_more_than_5s_in_the_future_is_denied(mode: RiskMode) -> None:
    assert_denied(
        check(mode, intent(price_as_of=NOW + timedelta(seconds=5) + MICROSECOND)),
        (DenialCode.PRICE_FROM_FUTURE, "PRICE_FROM_FUTURE: ahead_s=5.001 max_skew_s=5.0"),
    )


@per_mode
def test_missing_price_time_is_allowed_with_an_assumption(mode: RiskMode) -> None:
    decision = check(mode, intent(price_as_of=None))

    assert_allowed(decision)
    assert decision.assumptions == ("no price_as_of given: the price is taken as of the request time",)


def test_price_age_limit_is_configurable() -> None:
    guard = RiskGuard(RiskGuardConfig(max_price_age_seconds=10.0))
    trade = intent(price_as_of=NOW - timedelta(seconds=11))

    assert_denied(
        check(RiskMode.NORMAL, trade, guard=guard),
        (DenialCode.STALE_PRICE, "STALE_PRICE: age_s=11.000 max_s=10.0"),
    )


# --- hard limits --------------------------------------------------------------------------

# The baseline trade needs 100 / 2 = 50 USDT of margin; 10% of 100 000 must stay free.
MARGIN_AT_LIMIT = Decimal(89_950)


@per_mode
def test_free_margin_at_10_percent_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, acct=account(used_margin=MARGIN_AT_LIMIT)))


@per_mode
def test_free_margin_below_10_percent_is_denied(mode: RiskMode) -> None:
    # The detail rounds 9.9999999% to 4 places, so it reads 10.0000 (see the report).
    assert_denied(
        check(mode, acct=account(used_margin=MARGIN_AT_LIMIT + STEP)),
        (DenialCode.HARD_MARGIN_RATIO, "HARD_MARGIN_RATIO: free_margin_pct_after=9.9999 min=10"),
    )


def test_free_margin_detail_with_a_visible_shortfall() -> None:
    assert_denied(
        check(RiskMode.NORMAL, acct=account(used_margin=MARGIN_AT_LIMIT + 1000)),
        (DenialCode.HARD_MARGIN_RATIO, "HARD_MARGIN_RATIO: free_margin_pct_after=9.0000 min=10"),
    )


# Equity equal to the profile's size cap: half of it is within the cap and exactly 50% of equity.
def half_equity_trade(mode: RiskMode, extra: Decimal = Decimal(0)) -> tuple[TradeIntent, AccountState]:
    equity = Decimal(LIMITS[mode].position_size_cap_usd)
    return intent(notional=equity / 2 + extra), account(equity=equity, day_start_equity=equity)


@per_mode
def test_position_at_50_percent_of_equity_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, *half_equity_trade(mode)))


@per_mode
def test_position_above_50_percent_of_equity_is_denied(mode: RiskMode) -> None:
    assert_denied(
        check(mode, *half_equity_trade(mode, STEP)),
        (DenialCode.HARD_POSITION_EQUITY, "HARD_POSITION_EQUITY: position_pct=50.0001 max=50"),
    )


# Open notional that, with the 100 USDT trade, is exactly 200% of 100 000.
OPEN_NOTIONAL_AT_LIMIT = Decimal(199_900)


@per_mode
def test_total_exposure_at_200_percent_passes(mode: RiskMode) -> None:
    assert_allowed(check(mode, acct=account(open_positions=1, open_notional=OPEN_NOTIONAL_AT_LIMIT)))


@per_mode
def test_total_exposure_above_200_percent_is_denied(mode: RiskMode) -> None:
    assert_denied(
        check(mode, acct=account(open_positions=1, open_notional=OPEN_NOTIONAL_AT_LIMIT + STEP)),
        (DenialCode.HARD_TOTAL_EXPOSURE, "HARD_TOTAL_EXPOSURE: exposure_pct_after=200.0001 max=200"),
    )


def test_hard_limits_are_the_documented_values() -> None:
    hard = RiskGuard().config.hard

    assert hard is HARD_LIMITS
    assert hard == HardLimits(
        max_leverage=Decimal(125),
        min_margin_ratio_pct=Decimal(10),
        max_position_equity_pct=Decimal(50),
        max_total_exposure_pct=Decimal(200),
    )


# A profile loosened as far as validation allows.
LOOSEST = {
    "max_leverage": Decimal(125),
    "max_risk_pct_per_trade": Decimal(100),
    "max_daily_drawdown_pct": Decimal(100),
    "emergency_drawdown_pct": Decimal(100),
    "max_open_positions": 1_000_000,
    "position_size_cap_usd": Decimal("1e12"),
    "global_min_confidence": Decimal(0),
    "allow_new_positions": True,
}
HALF = EQUITY / 2  # 50 000 at 2x: 25 000 margin
HARD_CASES = {
    # name: (at the limit, one step beyond, expected reason)
    "position": (
        dict(notional=HALF),
        dict(notional=HALF + STEP),
        (DenialCode.HARD_POSITION_EQUITY, "HARD_POSITION_EQUITY: position_pct=50.0001 max=50"),
    ),
    "exposure": (
        dict(notional=HALF, open_notional=Decimal(150_000)),
        dict(notional=HALF, open_notional=Decimal(150_000) + STEP),
        (DenialCode.HARD_TOTAL_EXPOSURE, "HARD_TOTAL_EXPOSURE: exposure_pct_after=200.0001 max=200"),
    ),
    "margin": (
        dict(notional=HALF, used_margin=Decimal(65_000)),
        dict(notional=HALF, used_margin=Decimal(65_000) + STEP),
        (DenialCode.HARD_MARGIN_RATIO, "HARD_MARGIN_RATIO: free_margin_pct_after=9.9999 min=10"),
    ),
}


def loosest_trade(values: dict[str, Decimal]) -> tuple[TradeIntent, AccountState]:
    return (
        intent(notional=values["notional"], confidence=Decimal(0)),
        account(
            equity=EQUITY,
            open_positions=999_999,
            open_notional=values.get("open_notional", Decimal(0)),
            used_margin=values.get("used_margin", Decimal(0)),
            day_start_equity=EQUITY * 2,  # a 50% daily drawdown
        ),
    )


@per_mode
@pytest.mark.parametrize("case", list(HARD_CASES))
def test_hard_limits_hold_for_the_loosest_valid_profile(mode: RiskMode, case: str) -> None:
    profile = effective_profile(mode, LOOSEST)
    at_limit, beyond, reason = HARD_CASES[case]

    assert_allowed(check(profile, *loosest_trade(at_limit)))
    assert_denied(check(profile, *loosest_trade(beyond)), reason)


# --- switches -----------------------------------------------------------------------------


@per_mode
def test_kill_switch_denies(mode: RiskMode) -> None:
    assert_denied(
        check(mode, kill_switch="exchange incident"),
        (DenialCode.KILL_SWITCH, "KILL_SWITCH: trading halted by operator: exchange incident"),
    )


@per_mode
def test_new_positions_disabled_denies(mode: RiskMode) -> None:
    profile = effective_profile(mode, {"allow_new_positions": False})

    assert_denied(
        check(profile),
        (DenialCode.NEW_POSITIONS_DISABLED, f"NEW_POSITIONS_DISABLED: profile={mode}"),
    )


@per_mode
def test_safety_halt_denies(mode: RiskMode) -> None:
    halted = SafetyView(halted=True, state="HALTED", reason="daily drawdown 5.00% >= 5.0%")

    assert_denied(
        check(mode, safety=halted),
        (DenialCode.SAFETY_HALTED, "SAFETY_HALTED: state=HALTED daily drawdown 5.00% >= 5.0%"),
    )


@per_mode
def test_blocked_symbol_denies(mode: RiskMode) -> None:
    assert_denied(
        check(mode, blocked_symbols={SYMBOL: "delisting"}),
        (DenialCode.SYMBOL_BLOCKED, f"SYMBOL_BLOCKED: symbol={SYMBOL} reason=delisting"),
    )


@per_mode
def test_other_blocked_symbols_do_not_deny(mode: RiskMode) -> None:
    assert_allowed(check(mode, blocked_symbols={"ETH/USDT:USDT": "delisting"}))


@per_mode
def test_no_equity_denies_and_skips_ratio_checks(mode: RiskMode) -> None:
    decision = check(mode, acct=account(equity=Decimal(0), day_start_equity=Decimal(0)))

    assert_denied(decision, (DenialCode.NO_EQUITY, "NO_EQUITY: equity=0"))
    assert decision.risk_pct == Decimal(0)


# --- several failures at once -------------------------------------------------------------


def test_every_failing_check_is_listed_in_order() -> None:
    profile = effective_profile(RiskMode.NORMAL, {"allow_new_positions": False})
    trade = intent(
        notional=Decimal(5000),
        leverage=Decimal(200),
        stop_loss=None,
        confidence=Decimal("0.1"),
        price_as_of=NOW - timedelta(hours=1),
    )
    acct = account(
        equity=Decimal(1000),
        open_positions=30,
        open_notional=Decimal(0),
        used_margin=Decimal(990),
        day_start_equity=Decimal(2000),
    )
    halted = SafetyView(halted=True, state="HALTED", reason="emergency")

    decision = check(profile, trade, acct, halted, kill_switch="incident", blocked_symbols={SYMBOL: "manual"})

    assert decision.allowed is False
    assert [r.code for r in decision.reasons] == [
        DenialCode.KILL_SWITCH,
        DenialCode.NEW_POSITIONS_DISABLED,
        DenialCode.SAFETY_HALTED,
        DenialCode.SYMBOL_BLOCKED,
        DenialCode.MAX_LEVERAGE,
        DenialCode.HARD_MAX_LEVERAGE,
        DenialCode.MAX_RISK_PER_TRADE,
        DenialCode.POSITION_SIZE_CAP,
        DenialCode.MAX_OPEN_POSITIONS,
        DenialCode.DAILY_DRAWDOWN,
        DenialCode.MIN_CONFIDENCE,
        DenialCode.STALE_PRICE,
        DenialCode.HARD_MARGIN_RATIO,
        DenialCode.HARD_POSITION_EQUITY,
        DenialCode.HARD_TOTAL_EXPOSURE,
        DenialCode.LEVERAGE_TIER,
        DenialCode.STOP_BEYOND_LIQUIDATION,
    ]
    assert decision.assumptions == (NO_STOP_ASSUMPTION,)


def test_the_exclusive_codes_are_listed_together_too() -> None:
    trade = intent(leverage=Decimal(6), confidence=None, price_as_of=NOW + timedelta(minutes=1))
    acct = account(equity=Decimal(0), day_start_equity=Decimal(1000))

    decision = check(RiskMode.NORMAL, trade, acct)

    assert [r.code for r in decision.reasons] == [
        DenialCode.NO_EQUITY,
        DenialCode.MAX_LEVERAGE,
        DenialCode.DAILY_DRAWDOWN,
        DenialCode.CONFIDENCE_MISSING,
        DenialCode.PRICE_FROM_FUTURE,
    ]
    assert decision.reasons[2].detail == "DAILY_DRAWDOWN: drawdown_pct=100.0000 max=5.0 profile=NORMAL"


# --- overrides ----------------------------------------------------------------------------

TIGHTENING = {
    # name: (override, change to the baseline trade or account, expected code)
    "leverage": ({"max_leverage": Decimal(2)}, dict(leverage=Decimal(2) + STEP), DenialCode.MAX_LEVERAGE),
    "risk": ({"max_risk_pct_per_trade": Decimal("0.0005")}, {}, DenialCode.MAX_RISK_PER_TRADE),
    "size": ({"position_size_cap_usd": Decimal(99)}, {}, DenialCode.POSITION_SIZE_CAP),
    "open": ({"max_open_positions": 3}, dict(open_positions=3), DenialCode.MAX_OPEN_POSITIONS),
    "drawdown": ({"max_daily_drawdown_pct": Decimal(1)}, dict(equity=Decimal(99_000)), DenialCode.DAILY_DRAWDOWN),
    "confidence": ({"global_min_confidence": Decimal("0.95")}, {}, DenialCode.MIN_CONFIDENCE),
    "disabled": ({"allow_new_positions": False}, {}, DenialCode.NEW_POSITIONS_DISABLED),
}


@per_mode
@pytest.mark.parametrize("case", list(TIGHTENING))
def test_tightening_override_takes_effect(mode: RiskMode, case: str) -> None:
    override, change, code = TIGHTENING[case]
    trade = intent(**{k: v for k, v in change.items() if k in TradeIntent.__slots__})
    acct = account(**{k: v for k, v in change.items() if k in AccountState.__slots__})

    assert_allowed(check(mode, trade, acct))
    decision = check(effective_profile(mode, override), trade, acct)
    assert [r.code for r in decision.reasons] == [code]
    assert decision.allowed is False


# --- exchange-aware checks ------------------------------------------------------------------------


def test_leverage_tier_caps_leverage_by_the_position_size() -> None:
    """BTC/USDT:USDT tiers: [0, 50,000) up to 125x, [50,000, 600,000) up to 100x."""
    roomy = effective_profile(
        RiskMode.NORMAL, {"max_leverage": Decimal(125), "position_size_cap_usd": Decimal(100_000)}
    )
    big = intent(notional=Decimal(50_000), leverage=Decimal(101), stop_loss=Decimal("99.9"))
    decision = check(roomy, big, guard=NO_BUFFER)
    assert [r.detail for r in decision.reasons if r.code is DenialCode.LEVERAGE_TIER] == [
        "LEVERAGE_TIER: requested=101 max=100 for notional=50000 (tier 2 of BTC/USDT:USDT)"
    ]
    below = check(roomy, replace(big, notional=Decimal("49999.99")), guard=NO_BUFFER)
    assert DenialCode.LEVERAGE_TIER not in [r.code for r in below.reasons]
    unknown = check(RiskMode.NORMAL, intent(symbol="SOL/USDT:USDT"))
    assert [r.code for r in unknown.reasons] == [DenialCode.LEVERAGE_TIER]
    assert "no leverage tiers for symbol 'SOL/USDT:USDT'" in unknown.reasons[0].detail


@pytest.mark.parametrize(
    ("side", "stop", "allowed"),
    [
        # 100 USDT at 50x, price 100: amount 1, margin 2, MMR 0.004, cum 0.
        # Long: LP = (2 - 100) / (0.004 - 1) = 98.3936; with the 0.5 % buffer the stop must be above 98.8936.
        (Side.LONG, "99", True),
        (Side.LONG, "98.9", True),
        (Side.LONG, "98.89", False),
        (Side.LONG, None, False),  # the assumed 2 % stop (98) lies beyond
        # Short: LP = (2 + 100) / (0.004 + 1) = 101.5936; the stop must be below 101.0936.
        (Side.SHORT, "101", True),
        (Side.SHORT, "101.09", True),
        (Side.SHORT, "101.1", False),
        (Side.SHORT, None, False),
    ],
)
def test_a_stop_must_trigger_before_liquidation_with_the_buffer(side: Side, stop: str | None, allowed: bool) -> None:
    roomy = effective_profile(RiskMode.NORMAL, {"max_leverage": Decimal(50), "max_risk_pct_per_trade": 100.0})
    decision = check(roomy, intent(side=side, leverage=Decimal(50), stop_loss=Decimal(stop) if stop else None))
    codes = [r.code for r in decision.reasons]
    assert (DenialCode.STOP_BEYOND_LIQUIDATION not in codes) is allowed, decision.reasons
    if not allowed:
        detail = next(r.detail for r in decision.reasons if r.code is DenialCode.STOP_BEYOND_LIQUIDATION)
        expected_lp = "98.3936" if side is Side.LONG else "101.5936"
        assert f"liquidation={expected_lp}" in detail and "buffer=0.5% of entry at leverage=50" in detail
