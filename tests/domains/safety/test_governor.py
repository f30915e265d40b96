"""SafetyGovernor: daily and emergency drawdown halts, losing streaks, recovery."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode, RiskProfile
from app.domains.safety.governor import GovernorConfig, SafetyGovernor, SafetyState, TradingState

NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 11, 0, 0, tzinfo=UTC)
NEXT_DAY = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
START = Decimal(100_000)
STEP = Decimal("0.0001")
HALF = Decimal("0.5")
ONE = Decimal(1)

GOV = SafetyGovernor()
NORMAL = DEFAULT_PROFILES[RiskMode.NORMAL]

# Equity at exactly the daily / emergency drawdown limit from 100 000.
DAILY_LIMIT_EQUITY = {
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: Decimal(94_000),  # 6.0%
    RiskMode.NORMAL: Decimal(95_000),  # 5.0%
    RiskMode.DEFENSIVE: Decimal(97_000),  # 3.0%
}
EMERGENCY_LIMIT_EQUITY = {
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: Decimal(90_400),  # 9.6%
    RiskMode.NORMAL: Decimal(92_000),  # 8.0%
    RiskMode.DEFENSIVE: Decimal(95_200),  # 4.8%
}

per_mode = pytest.mark.parametrize("mode", list(RiskMode), ids=str)


def fresh() -> SafetyState:
    return SafetyState.initial(START, NOW)


def trades(
    pnls: list[int], *, profile: RiskProfile = NORMAL, gov: SafetyGovernor = GOV, start: SafetyState | None = None
) -> SafetyState:
    """Close trades with these (small) PnLs one minute apart; equity follows the PnL."""
    s = start or fresh()
    equity = s.day_start_equity
    for i, pnl in enumerate(pnls):
        equity += pnl
        s = gov.on_trade_closed(s, Decimal(pnl), equity, profile, NOW + timedelta(minutes=i + 1))
    return s


# --- initial state ------------------------------------------------------------------------


def test_initial_state_starts_from_the_account_equity() -> None:
    s = SafetyState.initial(Decimal("12345.67"), NOW)

    assert s.state is TradingState.ACTIVE
    assert s.emergency is False
    assert s.halted_until is None
    assert s.peak_equity == Decimal("12345.67")
    assert s.day_start_equity == Decimal("12345.67")
    assert s.day == date(2026, 3, 10)
    assert (s.losing_streak, s.winning_streak) == (0, 0)
    assert s.leverage_multiplier == ONE
    assert s.updated_at == NOW
    assert s.emergency_reset_equity is None

    view = GOV.view(s, NOW)
    assert (view.halted, view.state, view.leverage_multiplier) == (False, "ACTIVE", ONE)


def test_default_config() -> None:
    assert GovernorConfig() == GovernorConfig(
        losing_streak_threshold=3, streak_leverage_multiplier=HALF, recovery_wins=2
    )


def test_drawdown_percentages() -> None:
    s = fresh()

    assert s.daily_drawdown_pct(Decimal(95_000)) == Decimal(5)
    assert s.daily_drawdown_pct(Decimal(110_000)) == Decimal(0)  # gains are not negative drawdown
    assert s.drawdown_from_peak_pct(Decimal(75_000)) == Decimal(25)
    zero = SafetyState.initial(Decimal(0), NOW)
    assert zero.daily_drawdown_pct(Decimal(-5)) == Decimal(0)
    assert zero.drawdown_from_peak_pct(Decimal(-5)) == Decimal(0)


# --- daily drawdown halt ------------------------------------------------------------------


@per_mode
def test_drawdown_just_below_daily_limit_stays_active(mode: RiskMode) -> None:
    s = GOV.evaluate(fresh(), DAILY_LIMIT_EQUITY[mode] + STEP, DEFAULT_PROFILES[mode], NOW)

    assert s.state is TradingState.ACTIVE
    assert s.halted_until is None
    assert GOV.view(s, NOW).halted is False


@per_mode
def test_daily_drawdown_at_limit_halts_until_next_utc_midnight(mode: RiskMode) -> None:
    profile = DEFAULT_PROFILES[mode]
    s = GOV.evaluate(fresh(), DAILY_LIMIT_EQUITY[mode], profile, NOW)

    assert s.state is TradingState.HALTED
    assert s.emergency is False
    assert s.halted_until == MIDNIGHT
    assert s.updated_at == NOW
    limit = profile.max_daily_drawdown_pct
    assert s.reason == (
        f"daily drawdown {limit:.2f}% >= {limit}% (profile {mode}); new positions halted until UTC midnight"
    )
    view = GOV.view(s, NOW)
    assert (view.halted, view.state, view.reason) == (True, "HALTED", s.reason)


def test_halt_is_lifted_exactly_at_midnight() -> None:
    s = GOV.evaluate(fresh(), Decimal(95_000), NORMAL, NOW)

    assert GOV.view(s, MIDNIGHT - timedelta(microseconds=1)).halted is True
    after = GOV.view(s, MIDNIGHT)
    assert (after.halted, after.state) == (False, "ACTIVE")


def test_daily_halt_holds_for_the_rest_of_the_day_even_if_equity_recovers() -> None:
    s = GOV.evaluate(fresh(), Decimal(95_000), NORMAL, NOW)
    later = NOW + timedelta(hours=10)

    s = GOV.evaluate(s, START, NORMAL, later)

    assert s.state is TradingState.HALTED
    assert s.halted_until == MIDNIGHT
    assert GOV.view(s, later).halted is True


def test_halt_at_one_microsecond_before_midnight_ends_at_that_midnight() -> None:
    late = MIDNIGHT - timedelta(microseconds=1)
    s = GOV.evaluate(SafetyState.initial(START, late), Decimal(95_000), NORMAL, late)

    assert s.halted_until == MIDNIGHT


@per_mode
def test_roll_day_rebases_day_start_equity_and_lifts_the_daily_halt(mode: RiskMode) -> None:
    profile = DEFAULT_PROFILES[mode]
    low = DAILY_LIMIT_EQUITY[mode]
    halted = GOV.evaluate(fresh(), low, profile, NOW)

    s = GOV.roll_day(halted, low, MIDNIGHT)

    assert s.day == date(2026, 3, 11)
    assert s.day_start_equity == low
    assert s.state is TradingState.ACTIVE
    assert s.halted_until is None
    assert s.emergency is False
    assert GOV.view(s, MIDNIGHT).halted is False
    # The new day's drawdown is measured from the rebased equity.
    assert s.daily_drawdown_pct(low) == Decimal(0)
    assert GOV.evaluate(s, low, profile, MIDNIGHT).state is TradingState.ACTIVE


def test_roll_day_on_the_same_day_changes_nothing() -> None:
    s = GOV.evaluate(fresh(), Decimal(95_000), NORMAL, NOW)

    assert GOV.roll_day(s, Decimal(50_000), MIDNIGHT - timedelta(microseconds=1)) is s


def test_a_new_day_can_halt_again_from_its_own_start() -> None:
    s = GOV.roll_day(GOV.evaluate(fresh(), Decimal(95_000), NORMAL, NOW), Decimal(95_000), MIDNIGHT)

    # 5% of the new day's 95 000 is 4 750.
    assert GOV.evaluate(s, Decimal(90_250) + STEP, NORMAL, NEXT_DAY).state is TradingState.ACTIVE
    halted = GOV.evaluate(s, Decimal(90_250), NORMAL, NEXT_DAY)
    assert halted.state is TradingState.HALTED
    assert halted.halted_until == datetime(2026, 3, 12, tzinfo=UTC)


def test_closing_a_trade_on_a_new_day_rolls_the_day_first() -> None:
    halted = GOV.evaluate(fresh(), Decimal(95_000), NORMAL, NOW)

    s = GOV.on_trade_closed(halted, Decimal(10), Decimal(95_010), NORMAL, NEXT_DAY)

    assert s.day == date(2026, 3, 11)
    assert s.day_start_equity == Decimal(95_010)
    assert s.state is TradingState.ACTIVE


# --- emergency ----------------------------------------------------------------------------


@per_mode
def test_drawdown_just_below_emergency_is_only_a_daily_halt(mode: RiskMode) -> None:
    s = GOV.evaluate(fresh(), EMERGENCY_LIMIT_EQUITY[mode] + STEP, DEFAULT_PROFILES[mode], NOW)

    assert (s.state, s.emergency, s.halted_until) == (TradingState.HALTED, False, MIDNIGHT)


@per_mode
def test_emergency_drawdown_halts_until_reset(mode: RiskMode) -> None:
    profile = DEFAULT_PROFILES[mode]
    low = EMERGENCY_LIMIT_EQUITY[mode]
    s = GOV.evaluate(fresh(), low, profile, NOW)

    assert (s.state, s.emergency, s.halted_until) == (TradingState.HALTED, True, None)
    limit = profile.emergency_drawdown_pct
    assert s.reason == (
        f"emergency: daily drawdown {limit:.2f}% >= {limit}% (profile {mode}); close-only until an operator resets"
    )

    # Across midnight and into later days: still halted, whatever the equity does.
    for when in (MIDNIGHT, NEXT_DAY, NOW + timedelta(days=30)):
        assert GOV.view(s, when).halted is True
        s = GOV.roll_day(s, low, when)
        s = GOV.evaluate(s, low, profile, when)
        s = GOV.on_trade_closed(s, Decimal(500), low + 500, profile, when)
        assert (s.state, s.emergency) == (TradingState.HALTED, True)
        assert GOV.view(s, when).halted is True


def test_daily_halt_escalates_to_emergency() -> None:
    s = GOV.evaluate(fresh(), Decimal(95_000), NORMAL, NOW)
    s = GOV.evaluate(s, Decimal(92_000), NORMAL, NOW + timedelta(hours=1))

    assert (s.state, s.emergency, s.halted_until) == (TradingState.HALTED, True, None)


def test_reset_on_a_later_day_restores_active() -> None:
    s = GOV.evaluate(fresh(), Decimal(92_000), NORMAL, NOW)

    s = GOV.reset_emergency(s, Decimal(92_000), NORMAL, NEXT_DAY, "operator checked the positions")

    assert (s.state, s.emergency, s.halted_until) == (TradingState.ACTIVE, False, None)
    assert s.reason == "reset: operator checked the positions"
    assert s.day_start_equity == Decimal(92_000)
    assert GOV.view(s, NEXT_DAY).halted is False


def test_after_reset_the_daily_halt_still_applies() -> None:
    s = GOV.evaluate(fresh(), Decimal(92_000), NORMAL, NOW)
    later = NOW + timedelta(hours=1)

    # Same day, equity partly recovered: 6% is below the 8% emergency but above the 5% daily limit.
    s = GOV.reset_emergency(s, Decimal(94_000), NORMAL, later, "checked")

    assert (s.state, s.emergency, s.halted_until) == (TradingState.HALTED, False, MIDNIGHT)
    assert GOV.view(s, later).halted is True
    assert GOV.view(s, MIDNIGHT).halted is False


def test_reset_on_the_same_day_below_the_daily_limit_restores_active() -> None:
    s = GOV.evaluate(fresh(), Decimal(92_000), NORMAL, NOW)

    s = GOV.reset_emergency(s, Decimal(96_000), NORMAL, NOW + timedelta(hours=1), "checked")

    assert (s.state, s.emergency, s.halted_until) == (TradingState.ACTIVE, False, None)


def test_reset_lifts_the_emergency_even_if_the_days_drawdown_is_still_beyond_it() -> None:
    s = GOV.evaluate(fresh(), Decimal(92_000), NORMAL, NOW)
    later = NOW + timedelta(minutes=5)

    s = GOV.reset_emergency(s, Decimal(92_000), NORMAL, later, "checked")

    # The emergency is acknowledged; the 8% drawdown is still a daily halt until midnight.
    assert (s.state, s.emergency, s.halted_until) == (TradingState.HALTED, False, MIDNIGHT)
    assert s.emergency_reset_equity == Decimal(92_000)
    assert GOV.view(s, later).halted is True
    assert GOV.view(s, MIDNIGHT).halted is False


def test_after_a_same_day_reset_the_emergency_rearms_only_on_deeper_losses() -> None:
    s = GOV.evaluate(fresh(), Decimal(92_000), NORMAL, NOW)
    s = GOV.reset_emergency(s, Decimal(91_000), NORMAL, NOW + timedelta(minutes=5), "checked")
    later = NOW + timedelta(minutes=10)

    at_reset_equity = GOV.evaluate(s, Decimal(91_000), NORMAL, later)
    assert (at_reset_equity.state, at_reset_equity.emergency) == (TradingState.HALTED, False)

    deeper = GOV.evaluate(s, Decimal(91_000) - STEP, NORMAL, later)
    assert (deeper.state, deeper.emergency, deeper.halted_until) == (TradingState.HALTED, True, None)

    closed = GOV.on_trade_closed(s, Decimal(-1), Decimal(90_999), NORMAL, later)
    assert closed.emergency is True


def test_the_reset_acknowledgement_ends_with_the_day() -> None:
    s = GOV.evaluate(fresh(), Decimal(92_000), NORMAL, NOW)
    s = GOV.reset_emergency(s, Decimal(92_000), NORMAL, NOW + timedelta(minutes=5), "checked")

    s = GOV.roll_day(s, Decimal(92_000), MIDNIGHT)
    assert s.emergency_reset_equity is None
    assert (s.state, s.emergency) == (TradingState.ACTIVE, False)

    # 8% of the new day's 92 000 is 7 360: the emergency arms again from the new day's start.
    s = GOV.evaluate(s, Decimal(84_640), NORMAL, NEXT_DAY)
    assert (s.state, s.emergency) == (TradingState.HALTED, True)


# --- losing streaks -----------------------------------------------------------------------


def test_two_losses_change_nothing() -> None:
    s = trades([-10, -10])

    assert s.losing_streak == 2
    assert s.leverage_multiplier == ONE
    assert s.state is TradingState.ACTIVE


@per_mode
def test_three_losses_halve_the_leverage(mode: RiskMode) -> None:
    s = trades([-10, -10, -10], profile=DEFAULT_PROFILES[mode])

    assert s.losing_streak == 3
    assert s.leverage_multiplier == HALF
    assert s.state is TradingState.REDUCING
    assert s.reason == "losing streak 3: leverage multiplier 0.5"
    view = GOV.view(s, NOW + timedelta(minutes=5))
    assert (view.halted, view.state, view.leverage_multiplier) == (False, "REDUCING", HALF)


def test_further_losses_do_not_lower_the_multiplier_again() -> None:
    s = trades([-10] * 6)

    assert s.losing_streak == 6
    assert s.leverage_multiplier == HALF
    assert s.state is TradingState.REDUCING


def test_one_win_is_not_enough_to_recover() -> None:
    s = trades([-10, -10, -10, 10])

    assert (s.losing_streak, s.winning_streak) == (0, 1)
    assert s.leverage_multiplier == HALF
    assert s.state is TradingState.REDUCING


@per_mode
def test_two_consecutive_wins_restore_full_leverage(mode: RiskMode) -> None:
    s = trades([-10, -10, -10, 10, 10], profile=DEFAULT_PROFILES[mode])

    assert s.winning_streak == 2
    assert s.leverage_multiplier == ONE
    assert s.state is TradingState.ACTIVE
    assert s.reason == "recovered"
    assert GOV.view(s, NOW + timedelta(minutes=6)).leverage_multiplier == ONE


def test_a_loss_between_wins_restarts_the_recovery() -> None:
    s = trades([-10, -10, -10, 10, -10, 10])

    assert (s.losing_streak, s.winning_streak) == (0, 1)
    assert s.leverage_multiplier == HALF
    assert s.state is TradingState.REDUCING


def test_a_win_resets_the_losing_streak() -> None:
    s = trades([-10, -10, 10, -10, -10])

    assert s.losing_streak == 2
    assert s.leverage_multiplier == ONE
    assert s.state is TradingState.ACTIVE


def test_a_flat_trade_changes_no_streak() -> None:
    assert trades([-10, -10, 0]).losing_streak == 2
    s = trades([-10, -10, -10, 10, 0])
    assert (s.winning_streak, s.leverage_multiplier) == (1, HALF)
    s = trades([-10, -10, 0, -10])
    assert (s.losing_streak, s.leverage_multiplier) == (3, HALF)


def test_streak_settings_are_configurable() -> None:
    gov = SafetyGovernor(
        GovernorConfig(losing_streak_threshold=2, streak_leverage_multiplier=Decimal("0.25"), recovery_wins=1)
    )

    s = trades([-10, -10], gov=gov)
    assert (s.state, s.leverage_multiplier) == (TradingState.REDUCING, Decimal("0.25"))
    s = trades([10], gov=gov, start=s)
    assert (s.state, s.leverage_multiplier) == (TradingState.ACTIVE, ONE)


def test_reducing_then_daily_halt_comes_back_reducing_after_midnight() -> None:
    s = trades([-10, -10, -10])
    s = GOV.evaluate(s, Decimal(95_000), NORMAL, NOW + timedelta(hours=1))
    assert s.state is TradingState.HALTED

    view = GOV.view(s, MIDNIGHT)
    assert (view.halted, view.state, view.leverage_multiplier) == (False, "REDUCING", HALF)
    s = GOV.roll_day(s, Decimal(95_000), MIDNIGHT)
    assert (s.state, s.leverage_multiplier, s.halted_until) == (TradingState.REDUCING, HALF, None)


# --- peak equity --------------------------------------------------------------------------


def test_peak_equity_tracks_the_maximum() -> None:
    s = fresh()
    for i, (pnl, equity, peak) in enumerate(
        [
            (500, 100_500, 100_500),
            (-300, 100_200, 100_500),
            (800, 101_000, 101_000),
            (-2_000, 99_000, 101_000),
        ]
    ):
        s = GOV.on_trade_closed(s, Decimal(pnl), Decimal(equity), NORMAL, NOW + timedelta(minutes=i))
        assert s.peak_equity == Decimal(peak)

    assert s.drawdown_from_peak_pct(Decimal(90_900)) == Decimal(10)


# --- time zones ---------------------------------------------------------------------------

NEW_YORK = timezone(timedelta(hours=-5))


def test_halt_with_a_non_utc_clock_lasts_until_the_next_utc_midnight() -> None:
    local = datetime(2026, 3, 10, 23, 0, tzinfo=NEW_YORK)  # 2026-03-11 04:00 UTC

    s = GOV.evaluate(SafetyState.initial(START, local), Decimal(95_000), NORMAL, local)

    assert s.halted_until == datetime(2026, 3, 12, tzinfo=UTC)
    assert GOV.view(s, local).halted is True


def test_initial_day_is_the_utc_date() -> None:
    local = datetime(2026, 3, 10, 23, 0, tzinfo=NEW_YORK)  # 2026-03-11 04:00 UTC

    assert SafetyState.initial(START, local).day == date(2026, 3, 11)
