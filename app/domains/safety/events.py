"""Facts of the SafetyGovernor."""

from dataclasses import dataclass
from decimal import Decimal

from app.core.bus import Event


@dataclass(frozen=True, kw_only=True)
class SafetyStateChanged(Event):
    from_state: str
    to_state: str
    reason: str
    emergency: bool
    daily_drawdown_pct: Decimal
    leverage_multiplier: Decimal
