"""Response bodies of the safety API."""

from datetime import date, datetime

from pydantic import BaseModel

from app.core.money import DecimalStr


class SafetyStatusOut(BaseModel):
    state: str
    halted: bool
    emergency: bool
    reason: str
    halted_until: datetime | None
    equity: DecimalStr
    day: date
    day_start_equity: DecimalStr
    peak_equity: DecimalStr
    daily_drawdown_pct: DecimalStr
    drawdown_from_peak_pct: DecimalStr
    max_daily_drawdown_pct: DecimalStr
    emergency_drawdown_pct: DecimalStr
    losing_streak: int
    winning_streak: int
    leverage_multiplier: DecimalStr
    effective_max_leverage: DecimalStr
    profile_name: str
    updated_at: datetime
