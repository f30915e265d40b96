"""The operating-mode rules: pure, from the inputs and the mode in force to the next mode and why.

Modes, loosest to strictest: EXPANSION, OPTIMIZATION, PRESERVATION, EMERGENCY.

- EMERGENCY when any of: the Risk Brain's score is CRITICAL (>= 75); the drawdown from peak equity is
  at least `emergency_drawdown_pct`; a critical component (database, policy store) is down.
- PRESERVATION when any of: risk score HIGH (>= 50); drawdown at least `preservation_drawdown_pct`;
  win rate below `preservation_win_rate` over at least `min_trades` closed trades; a component is
  degraded (policy store serving its last known state, Redis down, new event-handler failures; the
  signal source is not a health input: RiskGuard judges each signal's source).
- EXPANSION when all of: risk score known and below 25; win rate at least `expansion_win_rate` over at
  least `min_trades` trades; drawdown below `expansion_drawdown_pct`; every component healthy.
- OPTIMIZATION otherwise.

Hysteresis: a stricter mode applies at once. A looser one needs (1) every input known (missing data is
never evidence for loosening), (2) the rules to choose it with every threshold moved against loosening
by its margin (5 risk points, 1 percentage point of drawdown, 0.05 of win rate), and (3) `min_dwell_seconds`
in the current mode; then the mode loosens one step (EMERGENCY → PRESERVATION → OPTIMIZATION → EXPANSION).

Each mode is a layer of the limit stack that can only tighten: EXPANSION and OPTIMIZATION add no limit,
PRESERVATION applies the DEFENSIVE profile's limits, EMERGENCY allows no new position (closing still works).
"""

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from app.domains.risk.stack import Layer, LayerLimits


class OperatingMode(StrEnum):
    EXPANSION = "EXPANSION"
    OPTIMIZATION = "OPTIMIZATION"
    PRESERVATION = "PRESERVATION"
    EMERGENCY = "EMERGENCY"

    @property
    def rank(self) -> int:
        """0 (loosest) to 3 (strictest)."""
        return _ORDER.index(self)


_ORDER = (OperatingMode.EXPANSION, OperatingMode.OPTIMIZATION, OperatingMode.PRESERVATION, OperatingMode.EMERGENCY)


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ModeConfig:
    critical_risk_score: float = 75.0
    high_risk_score: float = 50.0
    low_risk_score: float = 25.0
    emergency_drawdown_pct: float = 10.0
    preservation_drawdown_pct: float = 5.0
    expansion_drawdown_pct: float = 2.0
    preservation_win_rate: float = 0.40
    expansion_win_rate: float = 0.55
    min_trades: int = 20
    risk_margin: float = 5.0
    drawdown_margin_pct: float = 1.0
    win_rate_margin: float = 0.05
    min_dwell_seconds: float = 900.0
    derived: bool = field(default=False, repr=False)  # thresholds moved by the margins: not validated

    def __post_init__(self) -> None:
        if self.derived:
            return  # e.g. an expansion drawdown of 0 moved by its margin is -1: never met, as intended
        if not 0 <= self.low_risk_score < self.high_risk_score < self.critical_risk_score <= 100:
            raise ValueError("risk thresholds must satisfy 0 <= low < high < critical <= 100")
        if not 0 <= self.expansion_drawdown_pct < self.preservation_drawdown_pct < self.emergency_drawdown_pct:
            raise ValueError("drawdown thresholds must satisfy 0 <= expansion < preservation < emergency")
        if not 0 <= self.preservation_win_rate < self.expansion_win_rate <= 1:
            raise ValueError("win-rate thresholds must satisfy 0 <= preservation < expansion <= 1")
        if min(self.risk_margin, self.drawdown_margin_pct, self.win_rate_margin, self.min_dwell_seconds) < 0:
            raise ValueError("margins and the dwell time must be >= 0")

        if self.min_trades < 1:
            raise ValueError("min_trades must be >= 1")

    def against_loosening(self) -> "ModeConfig":
        """Every threshold moved by its margin in the direction that makes a looser mode harder."""
        return replace(
            self,
            # rounded so that 0.55 + 0.05 is 0.6, not 0.6000000000000001
            critical_risk_score=round(self.critical_risk_score - self.risk_margin, 12),
            high_risk_score=round(self.high_risk_score - self.risk_margin, 12),
            low_risk_score=round(self.low_risk_score - self.risk_margin, 12),
            emergency_drawdown_pct=round(self.emergency_drawdown_pct - self.drawdown_margin_pct, 12),
            preservation_drawdown_pct=round(self.preservation_drawdown_pct - self.drawdown_margin_pct, 12),
            expansion_drawdown_pct=round(self.expansion_drawdown_pct - self.drawdown_margin_pct, 12),
            preservation_win_rate=round(self.preservation_win_rate + self.win_rate_margin, 12),
            expansion_win_rate=round(self.expansion_win_rate + self.win_rate_margin, 12),
            derived=True,
        )


@dataclass(frozen=True, slots=True)
class ModeInputs:
    """What the rules read. None: not known (the source has not answered or has too little data)."""

    risk_score: float | None  # Risk Brain, 0-100
    risk_status: str  # the Risk Brain's status: ok, insufficient_data, unavailable
    drawdown_pct: float | None  # from peak equity (SafetyGovernor's peak), percent
    win_rate: float | None  # over the exposure memory's window
    trades: int  # closed trades behind win_rate
    health: Health
    unhealthy: tuple[str, ...] = ()  # the components that are not healthy, e.g. "database=down"

    @property
    def complete(self) -> bool:
        """Every source answered (a Risk Brain with too little data has answered: it says so)."""
        return self.risk_status != "unavailable" and self.drawdown_pct is not None and self.health is not Health.UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["health"] = self.health.value
        out["unhealthy"] = list(self.unhealthy)
        return out


@dataclass(frozen=True, slots=True)
class ModeDecision:
    mode: OperatingMode
    rule_mode: OperatingMode  # what the rules alone choose, before hysteresis
    reason: str
    inputs: ModeInputs


def classify(inputs: ModeInputs, config: ModeConfig) -> tuple[OperatingMode, list[str]]:
    """The mode the rules choose with `config`'s thresholds, and the rules that fired."""
    i, c = inputs, config
    emergency = []
    if i.risk_score is not None and i.risk_score >= c.critical_risk_score:
        emergency.append(f"risk score {i.risk_score:.1f} >= {c.critical_risk_score:g}")
    if i.drawdown_pct is not None and i.drawdown_pct >= c.emergency_drawdown_pct:
        emergency.append(f"drawdown {i.drawdown_pct:.2f}% >= {c.emergency_drawdown_pct:g}%")
    if i.health is Health.CRITICAL:
        emergency.append(f"critical component down ({', '.join(i.unhealthy)})")
    if emergency:
        return OperatingMode.EMERGENCY, emergency
    preservation = []
    if i.risk_score is not None and i.risk_score >= c.high_risk_score:
        preservation.append(f"risk score {i.risk_score:.1f} >= {c.high_risk_score:g}")
    if i.drawdown_pct is not None and i.drawdown_pct >= c.preservation_drawdown_pct:
        preservation.append(f"drawdown {i.drawdown_pct:.2f}% >= {c.preservation_drawdown_pct:g}%")
    if i.win_rate is not None and i.trades >= c.min_trades and i.win_rate < c.preservation_win_rate:
        preservation.append(f"win rate {i.win_rate:.3f} < {c.preservation_win_rate:g} over {i.trades} trades")
    if i.health is Health.DEGRADED:
        preservation.append(f"degraded ({', '.join(i.unhealthy)})")
    if preservation:
        return OperatingMode.PRESERVATION, preservation
    missing = []
    if i.risk_score is None or i.risk_score >= c.low_risk_score:
        missing.append(
            "risk score unknown" if i.risk_score is None else f"risk score {i.risk_score:.1f} >= {c.low_risk_score:g}"
        )
    if i.win_rate is None or i.trades < c.min_trades:
        missing.append(f"{i.trades} trades < {c.min_trades}" if i.trades < c.min_trades else "win rate unknown")
    elif i.win_rate < c.expansion_win_rate:
        missing.append(f"win rate {i.win_rate:.3f} < {c.expansion_win_rate:g}")
    if i.drawdown_pct is None or i.drawdown_pct >= c.expansion_drawdown_pct:
        missing.append(
            "drawdown unknown"
            if i.drawdown_pct is None
            else f"drawdown {i.drawdown_pct:.2f}% >= {c.expansion_drawdown_pct:g}%"
        )
    if i.health is not Health.HEALTHY:
        missing.append(f"health {i.health.value}")
    if missing:
        return OperatingMode.OPTIMIZATION, [f"no alarm; not expanding: {'; '.join(missing)}"]
    return OperatingMode.EXPANSION, [
        f"risk score {i.risk_score:.1f} < {c.low_risk_score:g}, win rate {i.win_rate:.3f} >= {c.expansion_win_rate:g}, "
        f"drawdown {i.drawdown_pct:.2f}% < {c.expansion_drawdown_pct:g}%, all healthy"
    ]


def decide_mode(
    current: OperatingMode | None,
    since: datetime | None,
    inputs: ModeInputs,
    config: ModeConfig,
    now: datetime,
) -> ModeDecision:
    """The next mode. `current` is the mode in force (None: none yet) and `since` when it took effect."""
    rule_mode, fired = classify(inputs, config)
    because = "; ".join(fired)
    if current is None:
        return ModeDecision(rule_mode, rule_mode, f"{rule_mode.value}: {because}", inputs)
    if rule_mode.rank >= current.rank:
        verb = "stays" if rule_mode is current else "tightens to"
        return ModeDecision(rule_mode, rule_mode, f"{verb} {rule_mode.value}: {because}", inputs)
    # Loosening: needs complete inputs, the margins and the dwell time; then one step.
    hold = None
    if not inputs.complete:
        hold = "inputs incomplete (missing data is never evidence for loosening)"
    elif since is not None and (now - since).total_seconds() < config.min_dwell_seconds:
        hold = f"{(now - since).total_seconds():.0f}s in {current.value} < min dwell {config.min_dwell_seconds:g}s"
    else:
        margined, _ = classify(inputs, config.against_loosening())
        if margined.rank >= current.rank:
            hold = "the rules choose a looser mode only without the hysteresis margins"
    if hold is not None:
        return ModeDecision(
            current, rule_mode, f"{current.value} held: rules choose {rule_mode.value} ({because}) but {hold}", inputs
        )
    step = _ORDER[current.rank - 1]
    return ModeDecision(step, rule_mode, f"loosens one step to {step.value}: {because}", inputs)


@cache
def mode_layer(mode: OperatingMode) -> LayerLimits:
    """The mode as a layer of the limit stack: it never loosens a limit. One object per mode, so
    RiskGuard's stack cache sees the same layer while the mode is unchanged."""
    if mode is OperatingMode.EMERGENCY:
        return LayerLimits(Layer.MODE, mode.value, new_positions_allowed=False)
    if mode is OperatingMode.PRESERVATION:
        defensive = DEFAULT_PROFILES[RiskMode.DEFENSIVE]
        return LayerLimits(
            Layer.MODE,
            mode.value,
            max_leverage=defensive.max_leverage,
            max_risk_pct_per_trade=defensive.max_risk_pct_per_trade,
            position_size_cap_usd=defensive.position_size_cap_usd,
            max_open_positions=defensive.max_open_positions,
            min_confidence=defensive.global_min_confidence,
            max_daily_drawdown_pct=defensive.max_daily_drawdown_pct,
        )
    return LayerLimits(Layer.MODE, mode.value)
