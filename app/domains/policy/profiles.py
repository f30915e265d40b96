"""Risk profiles: the three defaults and validated overrides."""

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from app.core.validation import MAX_USD, Count, Flag
from app.domains.risk.limits import HARD_LIMITS


class RiskMode(StrEnum):
    AGGRESSIVE_SMALL_ACCOUNT = "AGGRESSIVE_SMALL_ACCOUNT"
    NORMAL = "NORMAL"
    DEFENSIVE = "DEFENSIVE"


Number = Annotated[
    Decimal,
    Field(allow_inf_nan=False, decimal_places=8),
    PlainSerializer(float, return_type=float, when_used="json"),
]

Leverage = Annotated[Number, Field(gt=0, le=HARD_LIMITS.max_leverage)]
Percent = Annotated[Number, Field(gt=0, le=100)]
Usd = Annotated[Number, Field(gt=0, le=MAX_USD)]
Probability = Annotated[Number, Field(ge=0, le=1)]
PositionCount = Count

MIN_CONFIDENCE_DESCRIPTION = (
    "Minimum calibrated probability that the trade's take-profit 1 is hit before its stop (within the max "
    "hold): RiskGuard refuses a trade whose `confidence` is below it (MIN_CONFIDENCE). That is the signal's "
    "`confidence` when its `confidence_kind` is `p_tp_before_sl`. The default plan (TP1 +1.95 %, stop -2 %, "
    "taker fee and slippage on both fills) breaks even at about 0.53, so a useful minimum is a margin above that"
)


def _check_drawdowns(daily: Decimal | None, emergency: Decimal | None) -> None:
    if daily is not None and emergency is not None and emergency < daily:
        raise ValueError(f"emergency_drawdown_pct ({emergency}) must be >= max_daily_drawdown_pct ({daily})")


class RiskProfile(BaseModel):
    """The limits RiskGuard applies to every trade intent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: RiskMode
    max_leverage: Leverage
    max_risk_pct_per_trade: Percent
    max_daily_drawdown_pct: Percent
    emergency_drawdown_pct: Percent
    max_open_positions: PositionCount
    position_size_cap_usd: Usd
    global_min_confidence: Probability = Field(description=MIN_CONFIDENCE_DESCRIPTION)
    allow_new_positions: bool

    @model_validator(mode="after")
    def _drawdowns_ordered(self) -> "RiskProfile":
        _check_drawdowns(self.max_daily_drawdown_pct, self.emergency_drawdown_pct)
        return self

    def limits(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ProfileOverrides(BaseModel):
    """A partial profile: only the fields given replace the profile's values."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"max_open_positions": 3, "max_leverage": 4}]},
    )

    max_leverage: Leverage | None = None
    max_risk_pct_per_trade: Percent | None = None
    max_daily_drawdown_pct: Percent | None = None
    emergency_drawdown_pct: Percent | None = None
    max_open_positions: PositionCount | None = None
    position_size_cap_usd: Usd | None = None
    global_min_confidence: Probability | None = Field(default=None, description=MIN_CONFIDENCE_DESCRIPTION)
    allow_new_positions: Flag | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> "ProfileOverrides":
        names = self._given_names()
        if not names:
            raise ValueError("give at least one profile field to override")
        for name in names:
            if getattr(self, name) is None:
                raise ValueError(f"{name} must not be null; reset overrides to restore defaults")
        return self

    def _given_names(self) -> list[str]:
        return sorted(n for n in self.model_fields_set if n in ProfileOverrides.model_fields)

    def given(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._given_names()}


def _profile(name: RiskMode, **values: Any) -> RiskProfile:
    return RiskProfile(
        name=name,
        **{k: Decimal(str(v)) if isinstance(v, float) else v for k, v in values.items()},
    )


# global_min_confidence is on the P(TP1 before the stop) scale (MIN_CONFIDENCE_DESCRIPTION): margins above the
# default plan's breakeven of about 0.53 chosen from the economics (wider for the stricter profiles), not fitted to
# data. The portfolio policies (app/domains/governance/policy.py LIMITS) use the same scale.
DEFAULT_PROFILES: dict[RiskMode, RiskProfile] = {
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: _profile(
        RiskMode.AGGRESSIVE_SMALL_ACCOUNT,
        max_leverage=Decimal(7),
        max_risk_pct_per_trade=3.0,
        max_daily_drawdown_pct=6.0,
        emergency_drawdown_pct=9.6,
        max_open_positions=15,
        position_size_cap_usd=Decimal(300),
        global_min_confidence=0.55,
        allow_new_positions=True,
    ),
    RiskMode.NORMAL: _profile(
        RiskMode.NORMAL,
        max_leverage=Decimal(5),
        max_risk_pct_per_trade=1.5,
        max_daily_drawdown_pct=5.0,
        emergency_drawdown_pct=8.0,
        max_open_positions=30,
        position_size_cap_usd=Decimal(1000),
        global_min_confidence=0.57,
        allow_new_positions=True,
    ),
    RiskMode.DEFENSIVE: _profile(
        RiskMode.DEFENSIVE,
        max_leverage=Decimal(3),
        max_risk_pct_per_trade=0.75,
        max_daily_drawdown_pct=3.0,
        emergency_drawdown_pct=4.8,
        max_open_positions=10,
        position_size_cap_usd=Decimal(500),
        global_min_confidence=0.60,
        allow_new_positions=True,
    ),
}


def effective_profile(mode: RiskMode, overrides: dict[str, Any]) -> RiskProfile:
    """The default profile of `mode` with `overrides` applied and re-validated as a whole."""
    base = DEFAULT_PROFILES[mode]
    if not overrides:
        return base
    return RiskProfile.model_validate({**base.model_dump(), **overrides})
