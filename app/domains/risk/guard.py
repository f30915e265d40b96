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

from app.domains.execution.margin import (
    DEFAULT_LIQUIDATION_BUFFER_PCT,
    LeverageTier,
    leverage_tier,
    liquidation_price,
)
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
    LEVERAGE_TIER = "LEVERAGE_TIER"
    STOP_BEYOND_LIQUIDATION = "STOP_BEYOND_LIQUIDATION"
    PRICE_DEVIATION = "PRICE_DEVIATION"
    EXIT_PLAN_REFUSED = "EXIT_PLAN_REFUSED"  # the Exit Brain found no valid plan (set after the checks)
    EXCHANGE_REJECTED = "EXCHANGE_REJECTED"  # the exchange refused the entry (margin, filters): nothing opened


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
    market_price: Decimal | None = None  # the exchange's price now (the feed's), when known
    at_market: bool = False  # the caller gave no price: `price` is the market's
    signal_age_seconds: float | None = None  # of the signal the trade follows, on the price feed's clock


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
    max_signal_age_seconds: float = 7200.0  # SIGNAL_MAX_AGE_SECONDS: the same age the signal calls stale
    max_price_future_skew_seconds: float = 5.0
    assumed_stop_distance_pct: Decimal = Decimal(2)
    accept_fallback_signals: bool = False
    liquidation_buffer_pct: Decimal = DEFAULT_LIQUIDATION_BUFFER_PCT  # % of entry a stop keeps from liquidation
    max_price_deviation_pct: Decimal = Decimal(1)  # the market may be this far from the price the caller expects
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
        """Every check of `CHECKS`, in order; the decision lists every reason, not the first."""
        cfg = self.config
        limits = self.limits(profile, safety)
        equity = account.equity
        stop_pct = self.stop_distance_pct(intent)
        assumptions: list[str] = []
        if intent.stop_loss is None:
            assumptions.append(f"no stop_loss given: assumed a {cfg.assumed_stop_distance_pct}% stop distance")
        if intent.price_as_of is None:
            assumptions.append("no price_as_of given: the price is taken as of the request time")
        loss_at_stop = intent.notional * stop_pct / HUNDRED
        size_limits = (
            {
                limit.code: limit.value
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
        ctx = CheckContext(
            intent,
            account,
            safety,
            limits,
            cfg,
            now,
            kill_switch,
            blocked_symbols or {},
            loss_at_stop,
            loss_at_stop * HUNDRED / equity if equity > 0 else Decimal(0),
            size_limits,
            _tier(intent),
        )
        reasons = tuple(reason for check in CHECKS if (reason := check(ctx)) is not None)
        return RiskDecision(
            allowed=not reasons,
            reasons=reasons,
            profile_name=profile.name.value,
            trace_id=trace_id,
            risk_pct=ctx.risk_pct,
            max_leverage=limits.leverage_cap,
            assumptions=tuple(assumptions),
        )


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What every check reads: the intent, the account, the stack, and what is computed once for all."""

    intent: TradeIntent
    account: AccountState
    safety: SafetyView
    limits: EffectiveLimits
    config: RiskGuardConfig
    now: datetime
    kill_switch: str | None
    blocked_symbols: dict[str, str]
    loss_at_stop: Decimal
    risk_pct: Decimal
    size_limits: dict[str, Decimal]  # the largest notional each size check allows (empty without equity)
    tier: "LeverageTier | Reason"  # the position's leverage tier, or why there is none


Check = Callable[[CheckContext], Reason | None]


def _kill_switch(c: CheckContext) -> Reason | None:
    if c.kill_switch is None:
        return None
    return Reason(DenialCode.KILL_SWITCH, f"KILL_SWITCH: trading halted by operator: {c.kill_switch}")


def _new_positions(c: CheckContext) -> Reason | None:
    allowed = c.limits.new_positions_allowed
    return None if allowed.value else Reason(DenialCode.NEW_POSITIONS_DISABLED, f"NEW_POSITIONS_DISABLED: {allowed.by}")


def _safety_halted(c: CheckContext) -> Reason | None:
    if not c.safety.halted:
        return None
    return Reason(DenialCode.SAFETY_HALTED, f"SAFETY_HALTED: state={c.safety.state} {c.safety.reason}")


def _symbol_blocked(c: CheckContext) -> Reason | None:
    why = c.blocked_symbols.get(c.intent.symbol)
    if why is None:
        return None
    return Reason(DenialCode.SYMBOL_BLOCKED, f"SYMBOL_BLOCKED: symbol={c.intent.symbol} reason={why}")


def _fallback_signal(c: CheckContext) -> Reason | None:
    if c.intent.source != FALLBACK_SOURCE or c.config.accept_fallback_signals:
        return None
    return Reason(
        DenialCode.FALLBACK_SIGNAL,
        f"FALLBACK_SIGNAL: source={FALLBACK_SOURCE} is not accepted (ACCEPT_FALLBACK_SIGNALS=false)",
    )


def _no_equity(c: CheckContext) -> Reason | None:
    equity = c.account.equity
    return Reason(DenialCode.NO_EQUITY, f"NO_EQUITY: equity={equity}") if equity <= 0 else None


def _max_leverage(c: CheckContext) -> Reason | None:
    cap = c.limits.leverage_cap
    if c.intent.leverage <= cap:
        return None
    multiplier = c.limits.leverage_multiplier
    scaled = f" (streak multiplier {multiplier.value} {multiplier.by})" if multiplier.value != 1 else ""
    return Reason(
        DenialCode.MAX_LEVERAGE,
        f"MAX_LEVERAGE: requested={c.intent.leverage} max={cap}{scaled} {c.limits.max_leverage.by}",
    )


def _hard_max_leverage(c: CheckContext) -> Reason | None:
    hard_max = c.config.hard.max_leverage
    if c.intent.leverage <= hard_max:
        return None
    return Reason(DenialCode.HARD_MAX_LEVERAGE, f"HARD_MAX_LEVERAGE: requested={c.intent.leverage} hard_max={hard_max}")


def _max_risk_per_trade(c: CheckContext) -> Reason | None:
    if not c.size_limits or c.intent.notional <= c.size_limits["MAX_RISK_PER_TRADE"]:
        return None
    bound = c.limits.max_risk_pct_per_trade
    return Reason(
        DenialCode.MAX_RISK_PER_TRADE,
        f"MAX_RISK_PER_TRADE: risk_pct={_up(c.risk_pct)} max={bound.value} "
        f"loss_at_stop={_up(c.loss_at_stop)} equity={c.account.equity} {bound.by}",
    )


def _position_size_cap(c: CheckContext) -> Reason | None:
    cap = c.limits.position_size_cap_usd
    if c.intent.notional <= cap.value:
        return None
    return Reason(
        DenialCode.POSITION_SIZE_CAP, f"POSITION_SIZE_CAP: notional={c.intent.notional} cap={cap.value} {cap.by}"
    )


def _max_open_positions(c: CheckContext) -> Reason | None:
    bound = c.limits.max_open_positions
    if c.account.open_positions < bound.value:
        return None
    return Reason(
        DenialCode.MAX_OPEN_POSITIONS,
        f"MAX_OPEN_POSITIONS: open={c.account.open_positions} max={bound.value} {bound.by}",
    )


def _daily_drawdown(c: CheckContext) -> Reason | None:
    day_start = c.account.day_start_equity
    if day_start <= 0:
        return None
    drawdown = (day_start - c.account.equity) * HUNDRED / day_start
    bound = c.limits.max_daily_drawdown_pct
    if drawdown < bound.value:
        return None
    return Reason(
        DenialCode.DAILY_DRAWDOWN, f"DAILY_DRAWDOWN: drawdown_pct={_down(drawdown)} max={bound.value} {bound.by}"
    )


def _confidence(c: CheckContext) -> Reason | None:
    bound = c.limits.min_confidence
    if c.intent.confidence is None:
        return Reason(DenialCode.CONFIDENCE_MISSING, f"CONFIDENCE_MISSING: {bound.by} requires a confidence")
    if c.intent.confidence >= bound.value:
        return None
    return Reason(
        DenialCode.MIN_CONFIDENCE, f"MIN_CONFIDENCE: confidence={c.intent.confidence} min={bound.value} {bound.by}"
    )


def _price_age(c: CheckContext) -> Reason | None:
    signal_age = c.intent.signal_age_seconds
    if signal_age is not None and signal_age > c.config.max_signal_age_seconds:
        return Reason(
            DenialCode.STALE_PRICE,
            f"STALE_PRICE: signal_age_s={_seconds_up(signal_age)} max_s={c.config.max_signal_age_seconds}",
        )
    if c.intent.price_as_of is None:
        return None
    age = (c.now - c.intent.price_as_of).total_seconds()
    if age > c.config.max_price_age_seconds:
        return Reason(
            DenialCode.STALE_PRICE, f"STALE_PRICE: age_s={_seconds_up(age)} max_s={c.config.max_price_age_seconds}"
        )
    if -age > c.config.max_price_future_skew_seconds:
        return Reason(
            DenialCode.PRICE_FROM_FUTURE,
            f"PRICE_FROM_FUTURE: ahead_s={_seconds_up(-age)} max_skew_s={c.config.max_price_future_skew_seconds}",
        )
    return None


def _hard_margin_ratio(c: CheckContext) -> Reason | None:
    if not c.size_limits or c.intent.notional <= c.size_limits["HARD_MARGIN_RATIO"]:
        return None
    equity = c.account.equity
    margin_after = c.account.used_margin + c.intent.notional / c.intent.leverage
    ratio = (equity - margin_after) * HUNDRED / equity
    return Reason(
        DenialCode.HARD_MARGIN_RATIO,
        f"HARD_MARGIN_RATIO: free_margin_pct_after={_down(ratio)} min={c.config.hard.min_margin_ratio_pct}",
    )


def _hard_position_equity(c: CheckContext) -> Reason | None:
    if not c.size_limits or c.intent.notional <= c.size_limits["HARD_POSITION_EQUITY"]:
        return None
    position_pct = c.intent.notional * HUNDRED / c.account.equity
    return Reason(
        DenialCode.HARD_POSITION_EQUITY,
        f"HARD_POSITION_EQUITY: position_pct={_up(position_pct)} max={c.config.hard.max_position_equity_pct}",
    )


def _hard_total_exposure(c: CheckContext) -> Reason | None:
    if not c.size_limits or c.intent.notional <= c.size_limits["HARD_TOTAL_EXPOSURE"]:
        return None
    exposure_pct = (c.account.open_notional + c.intent.notional) * HUNDRED / c.account.equity
    return Reason(
        DenialCode.HARD_TOTAL_EXPOSURE,
        f"HARD_TOTAL_EXPOSURE: exposure_pct_after={_up(exposure_pct)} max={c.config.hard.max_total_exposure_pct}",
    )


def _tier(intent: TradeIntent) -> LeverageTier | Reason:
    try:
        return leverage_tier(symbol=intent.symbol, notional=intent.notional)
    except (KeyError, ValueError) as exc:  # no tier data, or a notional beyond the last tier
        return Reason(DenialCode.LEVERAGE_TIER, f"LEVERAGE_TIER: {exc.args[0] if exc.args else exc}")


def _leverage_tier(c: CheckContext) -> Reason | None:
    """Binance allows less leverage on bigger positions (its leverage-tier table)."""
    tier = c.tier
    if isinstance(tier, Reason):
        return tier
    if c.intent.leverage <= tier.max_leverage:
        return None
    return Reason(
        DenialCode.LEVERAGE_TIER,
        f"LEVERAGE_TIER: requested={c.intent.leverage} max={tier.max_leverage} for notional={c.intent.notional} "
        f"(tier {tier.tier} of {tier.symbol})",
    )


def _stop_beyond_liquidation(c: CheckContext) -> Reason | None:
    """The stop (given, or the assumed distance) must trigger before the isolated position's
    liquidation price, with `liquidation_buffer_pct` of the entry to spare."""
    tier = c.tier
    if isinstance(tier, Reason):
        return None  # LEVERAGE_TIER already says why
    intent = c.intent
    sign = 1 if intent.side is Side.LONG else -1
    stop = intent.stop_loss
    if stop is None:
        stop = intent.price * (1 - sign * c.config.assumed_stop_distance_pct / HUNDRED)
    lp = liquidation_price(
        side=intent.side.value,
        open_price=intent.price,
        amount=intent.notional / intent.price,
        wallet_balance=intent.notional / intent.leverage,
        mm_ratio=tier.mm_ratio,
        maintenance_amount=tier.maintenance_amount,
    )
    if lp is None:
        return None
    bound = lp + sign * intent.price * c.config.liquidation_buffer_pct / HUNDRED
    if (stop > bound) if sign > 0 else (stop < bound):
        return None
    return Reason(
        DenialCode.STOP_BEYOND_LIQUIDATION,
        f"STOP_BEYOND_LIQUIDATION: stop={stop.quantize(_SHOWN)} liquidation={lp.quantize(_SHOWN)} "
        f"buffer={c.config.liquidation_buffer_pct}% of entry at leverage={intent.leverage}",
    )


def price_deviation_pct(market: Decimal, expected: Decimal) -> Decimal:
    """How far the market is from the price the caller expects, in percent of the expected price."""
    return abs(market - expected) * HUNDRED / expected


def _price_deviation(c: CheckContext) -> Reason | None:
    """The exchange fills at the market: refuse when it is too far from the price the caller expects."""
    market = c.intent.market_price
    if market is None:
        return None
    deviation = price_deviation_pct(market, c.intent.price)
    if deviation <= c.config.max_price_deviation_pct:
        return None
    return Reason(
        DenialCode.PRICE_DEVIATION,
        f"PRICE_DEVIATION: market={market} expected={c.intent.price} deviation={_up(deviation)}% "
        f"max={c.config.max_price_deviation_pct}%",
    )


CHECKS: tuple[Check, ...] = (
    _kill_switch,
    _new_positions,
    _safety_halted,
    _symbol_blocked,
    _fallback_signal,
    _no_equity,
    _max_leverage,
    _hard_max_leverage,
    _max_risk_per_trade,
    _position_size_cap,
    _max_open_positions,
    _daily_drawdown,
    _confidence,
    _price_age,
    _hard_margin_ratio,
    _hard_position_equity,
    _hard_total_exposure,
    _leverage_tier,
    _stop_beyond_liquidation,
    _price_deviation,
)
"""RiskGuard's checks, in the order a decision lists their reasons. Each reads the limit stack and
the context and returns a reason or nothing."""
