"""Hard safety limits. They are code, not configuration: no profile or override loosens them."""

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class HardLimits:
    max_leverage: Decimal = Decimal(125)
    min_margin_ratio_pct: Decimal = Decimal(10)
    max_position_equity_pct: Decimal = Decimal(50)
    max_total_exposure_pct: Decimal = Decimal(200)


HARD_LIMITS = HardLimits()
