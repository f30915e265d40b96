"""The limit stack: every limit RiskGuard applies, its value and the layer that set it.

Layers (hard safety limits, the active risk profile, and the SafetyGovernor's leverage multiplier
today; portfolio governance and the operating mode join as more layers) each say what they
allow; the strictest value wins. `notional_limits` turns the stack and the account into the
largest notional each size check allows: RiskGuard denies a size above one of them, and position
sizing proposes at most their minimum (`max_notional`), so the two can never disagree.
"""

from dataclasses import dataclass, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any

from app.domains.policy.profiles import RiskProfile
from app.domains.risk.limits import HARD_LIMITS, HardLimits

HUNDRED = Decimal(100)


class Layer(StrEnum):
    HARD = "hard"
    PROFILE = "profile"
    GOVERNANCE = "governance"
    MODE = "mode"
    SAFETY = "safety"


@dataclass(frozen=True, slots=True)
class LayerLimits:
    """What one layer allows; None where it has no opinion."""

    layer: Layer
    source: str  # which profile, policy, mode or state, e.g. "NORMAL"
    max_leverage: Decimal | None = None
    max_risk_pct_per_trade: Decimal | None = None
    position_size_cap_usd: Decimal | None = None
    max_open_positions: int | None = None
    min_confidence: Decimal | None = None
    max_daily_drawdown_pct: Decimal | None = None
    new_positions_allowed: bool | None = None
    leverage_multiplier: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Bound:
    """One limit's value and the layer that set it."""

    value: Any
    layer: Layer
    source: str

    @property
    def by(self) -> str:
        """Names the binding layer in a denial, e.g. `profile=NORMAL` or `governance=CONSERVATIVE`."""
        return f"{self.layer.value}={self.source}"

    def as_dict(self) -> dict[str, Any]:
        value = self.value if isinstance(self.value, bool | int) else str(self.value)
        return {"value": value, "layer": self.layer.value, "source": self.source}


# Per limit: True when a larger value is stricter (a minimum), False when a smaller one is (a maximum).
_LARGER_IS_STRICTER = {
    "max_leverage": False,
    "max_risk_pct_per_trade": False,
    "position_size_cap_usd": False,
    "max_open_positions": False,
    "min_confidence": True,
    "max_daily_drawdown_pct": False,
    "leverage_multiplier": False,
}


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    max_leverage: Bound  # before the leverage multiplier; `leverage_cap` applies it
    max_risk_pct_per_trade: Bound
    position_size_cap_usd: Bound
    max_open_positions: Bound
    min_confidence: Bound
    max_daily_drawdown_pct: Bound
    new_positions_allowed: Bound
    leverage_multiplier: Bound
    hard: HardLimits
    layers: tuple[LayerLimits, ...]

    @property
    def leverage_cap(self) -> Decimal:
        """The largest leverage allowed: the strictest layer's maximum times the multiplier."""
        return Decimal(self.max_leverage.value) * Decimal(self.leverage_multiplier.value)

    def as_dict(self) -> dict[str, Any]:
        limits = {f.name: getattr(self, f.name).as_dict() for f in fields(self) if f.name not in ("hard", "layers")}
        limits["effective_max_leverage"] = {
            "value": str(self.leverage_cap),
            "layer": "stack",
            "source": "max × multiplier",
        }
        return {
            "limits": limits,
            "hard": {name: str(getattr(self.hard, name)) for name in self.hard.__slots__},
            "layers": [
                {
                    f.name: (v.value if isinstance(v, Layer) else v if isinstance(v, bool | int | str) else str(v))
                    for f in fields(layer)
                    if (v := getattr(layer, f.name)) is not None
                }
                for layer in self.layers
            ],
        }


def profile_layer(profile: RiskProfile) -> LayerLimits:
    return LayerLimits(
        Layer.PROFILE,
        profile.name.value,
        max_leverage=profile.max_leverage,
        max_risk_pct_per_trade=profile.max_risk_pct_per_trade,
        position_size_cap_usd=profile.position_size_cap_usd,
        max_open_positions=profile.max_open_positions,
        min_confidence=profile.global_min_confidence,
        max_daily_drawdown_pct=profile.max_daily_drawdown_pct,
        new_positions_allowed=profile.allow_new_positions,
    )


def safety_layer(state: str, leverage_multiplier: Decimal) -> LayerLimits:
    """The SafetyGovernor's leverage multiplier (a losing streak halves leverage)."""
    return LayerLimits(Layer.SAFETY, state, leverage_multiplier=leverage_multiplier)


def hard_layer(hard: HardLimits = HARD_LIMITS) -> LayerLimits:
    """The hard limits as a layer. Its leverage ceiling stays its own check (HARD_MAX_LEVERAGE), so a
    profile that somehow allowed more is still refused under the hard code; the size limits are in
    `notional_limits`."""
    return LayerLimits(Layer.HARD, "hard")


def stack(*layers: LayerLimits, hard: HardLimits = HARD_LIMITS) -> EffectiveLimits:
    """The strictest value of every limit over `layers` (the hard layer is always included)."""
    every = (hard_layer(hard), *layers)
    chosen: dict[str, Bound] = {}
    for name, larger_is_stricter in _LARGER_IS_STRICTER.items():
        best: Bound | None = None
        for layer in every:
            value = getattr(layer, name)
            if value is None:
                continue
            if best is None or (value > best.value if larger_is_stricter else value < best.value):
                best = Bound(value, layer.layer, layer.source)
        chosen[name] = best or _UNSET[name]
    allowed = Bound(True, Layer.HARD, "hard")
    for layer in every:
        if layer.new_positions_allowed is False:
            allowed = Bound(False, layer.layer, layer.source)
            break
    return EffectiveLimits(**chosen, new_positions_allowed=allowed, hard=hard, layers=tuple(every))


# What a limit is when no layer sets it: nothing beyond the hard limits.
_UNSET = {
    "max_leverage": Bound(HARD_LIMITS.max_leverage, Layer.HARD, "hard"),
    "max_risk_pct_per_trade": Bound(HUNDRED, Layer.HARD, "hard"),
    "position_size_cap_usd": Bound(Decimal("1e15"), Layer.HARD, "hard"),
    "max_open_positions": Bound(1_000_000, Layer.HARD, "hard"),
    "min_confidence": Bound(Decimal(0), Layer.HARD, "hard"),
    "max_daily_drawdown_pct": Bound(HUNDRED, Layer.HARD, "hard"),
    "leverage_multiplier": Bound(Decimal(1), Layer.HARD, "hard"),
}


@dataclass(frozen=True, slots=True)
class NotionalLimit:
    """The largest notional one size check allows (USDT), and what sets it."""

    code: str  # the denial code of the check
    value: Decimal
    by: str


def notional_limits(
    limits: EffectiveLimits,
    *,
    equity: Decimal,
    used_margin: Decimal,
    open_notional: Decimal,
    leverage: Decimal,
    stop_distance_pct: Decimal,
) -> tuple[NotionalLimit, ...]:
    """Every size check as the largest notional it allows. A notional is denied by a check exactly
    when it is above that check's value (RiskGuard); sizing proposes at most their minimum."""
    hard = limits.hard
    risk = limits.max_risk_pct_per_trade
    cap = limits.position_size_cap_usd
    return (
        NotionalLimit("POSITION_SIZE_CAP", Decimal(cap.value), cap.by),
        NotionalLimit("MAX_RISK_PER_TRADE", equity * Decimal(risk.value) / stop_distance_pct, risk.by),
        NotionalLimit("HARD_POSITION_EQUITY", equity * hard.max_position_equity_pct / HUNDRED, "hard"),
        NotionalLimit(
            "HARD_MARGIN_RATIO", (equity * (1 - hard.min_margin_ratio_pct / HUNDRED) - used_margin) * leverage, "hard"
        ),
        NotionalLimit("HARD_TOTAL_EXPOSURE", equity * hard.max_total_exposure_pct / HUNDRED - open_notional, "hard"),
    )


def max_notional(
    limits: EffectiveLimits,
    *,
    equity: Decimal,
    used_margin: Decimal,
    open_notional: Decimal,
    leverage: Decimal,
    stop_distance_pct: Decimal,
) -> NotionalLimit:
    """The largest notional every size check allows (never below 0), and the check that binds."""
    binding = min(
        notional_limits(
            limits,
            equity=equity,
            used_margin=used_margin,
            open_notional=open_notional,
            leverage=leverage,
            stop_distance_pct=stop_distance_pct,
        ),
        key=lambda limit: limit.value,
    )
    return NotionalLimit(binding.code, max(binding.value, Decimal(0)), binding.by)
