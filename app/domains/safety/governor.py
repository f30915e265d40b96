"""SafetyGovernor: ACTIVE -> REDUCING -> HALTED from equity and trade results.

Daily drawdown is measured from the UTC day's starting equity. Beyond the profile's
`max_daily_drawdown_pct` new positions halt until the next UTC midnight; beyond
`emergency_drawdown_pct` they halt until an operator resets (close-only). A losing streak
lowers the leverage multiplier RiskGuard applies; enough consecutive wins restore it.
Pure logic: the trading service loads, applies and persists it under the account lock.
"""

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum

from app.domains.policy.profiles import RiskProfile
from app.domains.risk.guard import SafetyView

HUNDRED = Decimal(100)
ONE = Decimal(1)


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True)
class GovernorConfig:
    losing_streak_threshold: int = 3
    streak_leverage_multiplier: Decimal = Decimal("0.5")
    recovery_wins: int = 2


@dataclass(frozen=True)
class SafetyState:
    state: TradingState
    reason: str
    emergency: bool
    halted_until: datetime | None
    peak_equity: Decimal
    day: date
    day_start_equity: Decimal
    losing_streak: int
    winning_streak: int
    leverage_multiplier: Decimal
    updated_at: datetime
    # Equity when an operator last reset an emergency today: until the day ends, the
    # emergency re-arms only if losses go deeper than that.
    emergency_reset_equity: Decimal | None = None

    @classmethod
    def initial(cls, equity: Decimal, now: datetime) -> "SafetyState":
        """Starting equity is the first peak, taken from the account's equity."""
        return cls(
            state=TradingState.ACTIVE,
            reason="initial state",
            emergency=False,
            halted_until=None,
            peak_equity=equity,
            day=now.astimezone(UTC).date(),
            day_start_equity=equity,
            losing_streak=0,
            winning_streak=0,
            leverage_multiplier=ONE,
            updated_at=now,
        )

    def daily_drawdown_pct(self, equity: Decimal) -> Decimal:
        if self.day_start_equity <= 0:
            return Decimal(0)
        return max(
            Decimal(0),
            (self.day_start_equity - equity) * HUNDRED / self.day_start_equity,
        )

    def drawdown_from_peak_pct(self, equity: Decimal) -> Decimal:
        if self.peak_equity <= 0:
            return Decimal(0)
        return max(Decimal(0), (self.peak_equity - equity) * HUNDRED / self.peak_equity)


def _next_utc_midnight(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(0), tzinfo=UTC)


class SafetyGovernor:
    def __init__(self, config: GovernorConfig | None = None) -> None:
        self.config = config or GovernorConfig()

    def roll_day(self, s: SafetyState, equity: Decimal, now: datetime) -> SafetyState:
        """Start a new UTC day: rebase the day's equity, lift an expired daily halt."""
        today = now.astimezone(UTC).date()
        if today <= s.day:
            return s
        s = replace(s, day=today, day_start_equity=equity, emergency_reset_equity=None, updated_at=now)
        if s.state is TradingState.HALTED and not s.emergency:
            s = self._settle(s, "daily halt expired at UTC midnight", now)
        return s

    def view(self, s: SafetyState, now: datetime) -> SafetyView:
        halted = s.state is TradingState.HALTED and (s.emergency or s.halted_until is None or now < s.halted_until)
        state = s.state.value if halted or s.state is not TradingState.HALTED else self._unhalted_state(s).value
        return SafetyView(
            halted=halted,
            state=state,
            reason=s.reason,
            leverage_multiplier=s.leverage_multiplier,
        )

    def on_trade_closed(
        self,
        s: SafetyState,
        pnl: Decimal,
        equity: Decimal,
        profile: RiskProfile,
        now: datetime,
    ) -> SafetyState:
        s = self.roll_day(s, equity, now)
        cfg = self.config
        if pnl < 0:
            s = replace(s, losing_streak=s.losing_streak + 1, winning_streak=0)
            if s.losing_streak >= cfg.losing_streak_threshold:
                s = replace(
                    s,
                    leverage_multiplier=min(s.leverage_multiplier, cfg.streak_leverage_multiplier),
                )
        elif pnl > 0:
            s = replace(s, losing_streak=0, winning_streak=s.winning_streak + 1)
            if s.leverage_multiplier < ONE and s.winning_streak >= cfg.recovery_wins:
                s = replace(s, leverage_multiplier=ONE)
        s = replace(s, peak_equity=max(s.peak_equity, equity), updated_at=now)
        return self.evaluate(s, equity, profile, now)

    def evaluate(self, s: SafetyState, equity: Decimal, profile: RiskProfile, now: datetime) -> SafetyState:
        """Apply drawdown limits of `profile` to the current equity."""
        daily = s.daily_drawdown_pct(equity)
        acknowledged = s.emergency_reset_equity is not None and equity >= s.emergency_reset_equity
        if daily >= profile.emergency_drawdown_pct and not acknowledged:
            if s.emergency:
                return s
            return replace(
                s,
                state=TradingState.HALTED,
                emergency=True,
                halted_until=None,
                reason=(
                    f"emergency: daily drawdown {daily:.2f}% >= {profile.emergency_drawdown_pct}% "
                    f"(profile {profile.name.value}); close-only until an operator resets"
                ),
                updated_at=now,
            )
        if s.emergency:
            return s
        if daily >= profile.max_daily_drawdown_pct:
            if s.state is TradingState.HALTED:
                return s
            return replace(
                s,
                state=TradingState.HALTED,
                halted_until=_next_utc_midnight(now),
                reason=(
                    f"daily drawdown {daily:.2f}% >= {profile.max_daily_drawdown_pct}% "
                    f"(profile {profile.name.value}); new positions halted until UTC midnight"
                ),
                updated_at=now,
            )
        if s.state is TradingState.HALTED and s.halted_until is not None and now < s.halted_until:
            return s
        return self._settle(s, s.reason, now)

    def reset_emergency(
        self,
        s: SafetyState,
        equity: Decimal,
        profile: RiskProfile,
        now: datetime,
        reason: str,
    ) -> SafetyState:
        """Operator reset: lift the emergency; a daily halt still applies if the day's drawdown calls for it."""
        s = self.roll_day(s, equity, now)
        s = replace(
            s,
            emergency=False,
            state=TradingState.ACTIVE,
            halted_until=None,
            reason=f"reset: {reason}",
            emergency_reset_equity=equity,
        )
        return self.evaluate(s, equity, profile, now)

    def _settle(self, s: SafetyState, reason: str, now: datetime) -> SafetyState:
        state = self._unhalted_state(s)
        if state is s.state and s.halted_until is None:
            return s
        if state is TradingState.REDUCING:
            reason = f"losing streak {s.losing_streak}: leverage multiplier {s.leverage_multiplier}"
        elif s.state is not TradingState.ACTIVE:
            reason = "recovered"
        return replace(s, state=state, halted_until=None, reason=reason, updated_at=now)

    @staticmethod
    def _unhalted_state(s: SafetyState) -> TradingState:
        return TradingState.REDUCING if s.leverage_multiplier < ONE else TradingState.ACTIVE
