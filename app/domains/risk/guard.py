"""RiskGuard: the pre-trade gate.

Pure and synchronous: it receives the intent, the live account state, the cached profile,
the governor's view and the clock, and returns a decision listing *every* failing check.
It never does I/O, so it can run under the account lock in microseconds.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from app.domains.policy.profiles import RiskProfile
from app.domains.risk.limits import HARD_LIMITS, HardLimits
from app.domains.risk.stack import (
    EffectiveLimits,
    LayerLimits,
    notional_limits,
    profile_layer,
    safety_layer,
    stack,
)

HUNDRED = Decimal(100)
FALLBACK_SOURCE = "fallback_momentum"  # the source the momentum fallback rule puts on its signals
_SHOWN = Decimal("0.0001")


def _up(value: Decimal) -> Decimal:
    """Shown value of a quantity that broke a maximum: rounded away from the limit."""
    return value.quantize(_SHOWN, rounding=ROUND_CEILING)


def _down(value: Decimal) -> Decimal:
    """Shown value of a quantity that fell below a minimum: rounded away from the limit."""
    return value.quantize(_SHOWN, rounding=ROUND_FLOOR)


def _seconds_up(value: float) -> str:
    return f"{math.ceil(value * 1000) / 1000:.3f}"


class Side(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"


class DenialCode(StrEnum):
    """Closed set of reasons a trade intent can be denied."""

    KILL_SWITCH = "KILL_SWITCH"
    NEW_POSITIONS_DISABLED = "NEW_POSITIONS_DISABLED"
    SAFETY_HALTED = "SAFETY_HALTED"
    SYMBOL_BLOCKED = "SYMBOL_BLOCKED"
    NO_EQUITY = "NO_EQUITY"
    MAX_LEVERAGE = "MAX_LEVERAGE"
    HARD_MAX_LEVERAGE = "HARD_MAX_LEVERAGE"
    MAX_RISK_PER_TRADE = "MAX_RISK_PER_TRADE"
    POSITION_SIZE_CAP = "POSITION_SIZE_CAP"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    DAILY_DRAWDOWN = "DAILY_DRAWDOWN"
    CONFIDENCE_MISSING = "CONFIDENCE_MISSING"
    MIN_CONFIDENCE = "MIN_CONFIDENCE"
    STALE_PRICE = "STALE_PRICE"
    PRICE_FROM_FUTURE = "PRICE_FROM_FUTURE"
    HARD_MARGIN_RATIO = "HARD_MARGIN_RATIO"
    HARD_POSITION_EQUITY = "HARD_POSITION_EQUITY"
    HARD_TOTAL_EXPOSURE = "HARD_TOTAL_EXPOSURE"
    FALLBACK_SIGNAL = "FALLBACK_SIGNAL"


@dataclass(frozen=True, slots=True)
class TradeIntent:
    symbol: str
    side: Side
    notional: Decimal
    leverage: Decimal
    price: Decimal
    price_as_of: datetime | None = None
    confidence: Decimal | None = None
    stop_loss: Decimal | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class AccountState:
    """Committed state of the account, read under its lock."""

    equity: Decimal
    open_positions: int
    open_notional: Decimal
    used_margin: Decimal
    day_start_equity: Decimal


@dataclass(frozen=True, slots=True)
class SafetyView:
    """What the SafetyGovernor says about new positions right now."""

    halted: bool
    state: str
    reason: str
    leverage_multiplier: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class Reason:
    code: DenialCode
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class RiskDecision:
    allowed: bool
    reasons: tuple[Reason, ...]
    profile_name: str
    trace_id: str
    risk_pct: Decimal
    max_leverage: Decimal
    assumptions: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RiskGuardConfig:
    max_price_age_seconds: float = 60.0
    max_price_future_skew_seconds: float = 5.0
    assumed_stop_distance_pct: Decimal = Decimal(2)
    accept_fallback_signals: bool = False
    hard: HardLimits = HARD_LIMITS


LayerSource = Callable[[], LayerLimits | None]


class RiskGuard:
    def __init__(self, config: RiskGuardConfig | None = None, layers: Sequence[LayerSource] = ()) -> None:
        self.config = config or RiskGuardConfig()
        self._layers = list(layers)
        self._cached: tuple[tuple[object, ...], EffectiveLimits] | None = None

    def add_layer(self, source: LayerSource) -> None:
        """Another layer of the stack (portfolio governance, operating mode): `source()` returns what
        it allows now, from memory (no I/O: a check runs under the account lock), or None."""
        self._layers.append(source)

    def limits(self, profile: RiskProfile, safety: SafetyView) -> EffectiveLimits:
        """The limit stack in force: hard limits, the profile, the added layers, the governor's
        multiplier; the strictest value of each limit wins."""
        added = tuple(layer for source in self._layers if (layer := source()) is not None)
        # The stack changes only with the policy snapshot, a layer or the governor's state: build it
        # once per change (tuple equality checks identity first, so a hit costs a few comparisons).
        key = (profile, safety.state, safety.leverage_multiplier, added)
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        limits = stack(
            profile_layer(profile),
            *added,
            safety_layer(safety.state, safety.leverage_multiplier),
            hard=self.config.hard,
        )
        self._cached = (key, limits)
        return limits

    def stop_distance_pct(self, intent: "TradeIntent") -> Decimal:
        """The stop distance a size is checked against: the given stop's, else the assumed one."""
        if intent.stop_loss is None:
            return self.config.assumed_stop_distance_pct
        return abs(intent.price - intent.stop_loss) * HUNDRED / intent.price

    def check(
        self,
        intent: TradeIntent,
        account: AccountState,
        profile: RiskProfile,
        safety: SafetyView,
        *,
        now: datetime,
        trace_id: str,
        kill_switch: str | None = None,
        blocked_symbols: dict[str, str] | None = None,
    ) -> RiskDecision:
        cfg = self.config
        hard = cfg.hard
        name = profile.name.value
        reasons: list[Reason] = []
        assumptions: list[str] = []
        deny = reasons.append
        limits = self.limits(profile, safety)

        if kill_switch is not None:
            deny(
                Reason(
                    DenialCode.KILL_SWITCH,
                    f"KILL_SWITCH: trading halted by operator: {kill_switch}",
                )
            )
        if not limits.new_positions_allowed.value:
            deny(
                Reason(
                    DenialCode.NEW_POSITIONS_DISABLED,
                    f"NEW_POSITIONS_DISABLED: {limits.new_positions_allowed.by}",
                )
            )
        if safety.halted:
            deny(
                Reason(
                    DenialCode.SAFETY_HALTED,
                    f"SAFETY_HALTED: state={safety.state} {safety.reason}",
                )
            )
        if blocked_symbols and intent.symbol in blocked_symbols:
            deny(
                Reason(
                    DenialCode.SYMBOL_BLOCKED,
                    f"SYMBOL_BLOCKED: symbol={intent.symbol} reason={blocked_symbols[intent.symbol]}",
                )
            )

        if intent.source == FALLBACK_SOURCE and not cfg.accept_fallback_signals:
            deny(
                Reason(
                    DenialCode.FALLBACK_SIGNAL,
                    f"FALLBACK_SIGNAL: source={FALLBACK_SOURCE} is not accepted (ACCEPT_FALLBACK_SIGNALS=false)",
                )
            )

        equity = account.equity
        if equity <= 0:
            deny(Reason(DenialCode.NO_EQUITY, f"NO_EQUITY: equity={equity}"))

        max_leverage = limits.leverage_cap
        if intent.leverage > max_leverage:
            multiplier = limits.leverage_multiplier
            scaled = f" (streak multiplier {multiplier.value} {multiplier.by})" if multiplier.value != 1 else ""
            deny(
                Reason(
                    DenialCode.MAX_LEVERAGE,
                    f"MAX_LEVERAGE: requested={intent.leverage} max={max_leverage}{scaled} {limits.max_leverage.by}",
                )
            )
        if intent.leverage > hard.max_leverage:
            deny(
                Reason(
                    DenialCode.HARD_MAX_LEVERAGE,
                    f"HARD_MAX_LEVERAGE: requested={intent.leverage} hard_max={hard.max_leverage}",
                )
            )

        notional = intent.notional
        stop_pct = self.stop_distance_pct(intent)
        if intent.stop_loss is None:
            assumptions.append(f"no stop_loss given: assumed a {cfg.assumed_stop_distance_pct}% stop distance")
        loss_at_stop = notional * stop_pct / HUNDRED
        risk_pct = loss_at_stop * HUNDRED / equity if equity > 0 else Decimal(0)
        size_limits = (
            {
                limit.code: limit
                for limit in notional_limits(
                    limits,
                    equity=equity,
                    used_margin=account.used_margin,
                    open_notional=account.open_notional,
                    leverage=intent.leverage,
                    stop_distance_pct=stop_pct,
                )
            }
            if equity > 0
            else {}
        )
        if equity > 0 and notional > size_limits["MAX_RISK_PER_TRADE"].value:
            deny(
                Reason(
                    DenialCode.MAX_RISK_PER_TRADE,
                    f"MAX_RISK_PER_TRADE: risk_pct={_up(risk_pct)} max={limits.max_risk_pct_per_trade.value} "
                    f"loss_at_stop={_up(loss_at_stop)} equity={equity} {limits.max_risk_pct_per_trade.by}",
                )
            )

        if notional > limits.position_size_cap_usd.value:
            deny(
                Reason(
                    DenialCode.POSITION_SIZE_CAP,
                    f"POSITION_SIZE_CAP: notional={notional} cap={limits.position_size_cap_usd.value} "
                    f"{limits.position_size_cap_usd.by}",
                )
            )
        if account.open_positions >= limits.max_open_positions.value:
            deny(
                Reason(
                    DenialCode.MAX_OPEN_POSITIONS,
                    f"MAX_OPEN_POSITIONS: open={account.open_positions} max={limits.max_open_positions.value} "
                    f"{limits.max_open_positions.by}",
                )
            )

        day_start = account.day_start_equity
        if day_start > 0:
            daily_dd = (day_start - equity) * HUNDRED / day_start
            if daily_dd >= limits.max_daily_drawdown_pct.value:
                deny(
                    Reason(
                        DenialCode.DAILY_DRAWDOWN,
                        f"DAILY_DRAWDOWN: drawdown_pct={_down(daily_dd)} max={limits.max_daily_drawdown_pct.value} "
                        f"{limits.max_daily_drawdown_pct.by}",
                    )
                )

        if intent.confidence is None:
            deny(
                Reason(
                    DenialCode.CONFIDENCE_MISSING,
                    f"CONFIDENCE_MISSING: profile={name} requires a confidence",
                )
            )
        elif intent.confidence < limits.min_confidence.value:
            deny(
                Reason(
                    DenialCode.MIN_CONFIDENCE,
                    f"MIN_CONFIDENCE: confidence={intent.confidence} min={limits.min_confidence.value} "
                    f"{limits.min_confidence.by}",
                )
            )

        if intent.price_as_of is None:
            assumptions.append("no price_as_of given: the price is taken as of the request time")
        else:
            age = (now - intent.price_as_of).total_seconds()
            if age > cfg.max_price_age_seconds:
                deny(
                    Reason(
                        DenialCode.STALE_PRICE,
                        f"STALE_PRICE: age_s={_seconds_up(age)} max_s={cfg.max_price_age_seconds}",
                    )
                )
            elif -age > cfg.max_price_future_skew_seconds:
                deny(
                    Reason(
                        DenialCode.PRICE_FROM_FUTURE,
                        f"PRICE_FROM_FUTURE: ahead_s={_seconds_up(-age)} "
                        f"max_skew_s={cfg.max_price_future_skew_seconds}",
                    )
                )

        if equity > 0:
            if notional > size_limits["HARD_MARGIN_RATIO"].value:
                margin_after = account.used_margin + notional / intent.leverage
                margin_ratio = (equity - margin_after) * HUNDRED / equity
                deny(
                    Reason(
                        DenialCode.HARD_MARGIN_RATIO,
                        f"HARD_MARGIN_RATIO: free_margin_pct_after={_down(margin_ratio)} "
                        f"min={hard.min_margin_ratio_pct}",
                    )
                )
            if notional > size_limits["HARD_POSITION_EQUITY"].value:
                position_pct = notional * HUNDRED / equity
                deny(
                    Reason(
                        DenialCode.HARD_POSITION_EQUITY,
                        f"HARD_POSITION_EQUITY: position_pct={_up(position_pct)} max={hard.max_position_equity_pct}",
                    )
                )
            if notional > size_limits["HARD_TOTAL_EXPOSURE"].value:
                exposure_pct = (account.open_notional + notional) * HUNDRED / equity
                deny(
                    Reason(
                        DenialCode.HARD_TOTAL_EXPOSURE,
                        f"HARD_TOTAL_EXPOSURE: exposure_pct_after={_up(exposure_pct)} "
                        f"max={hard.max_total_exposure_pct}",
                    )
                )

        return RiskDecision(
            allowed=not reasons,
            reasons=tuple(reasons),
            profile_name=name,
            trace_id=trace_id,
            risk_pct=risk_pct,
            max_leverage=max_leverage,
            assumptions=tuple(assumptions),
        )
