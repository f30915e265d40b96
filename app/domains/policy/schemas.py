"""Request and response bodies of the policy API."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.validation import Flag, Reason
from app.domains.policy.profiles import ProfileOverrides, RiskMode, RiskProfile

_WHY = Field(description="Why; kept in the audit trail")


class RiskModeSwitch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"mode": "DEFENSIVE", "reason": "CPI release in 10 minutes"}]},
    )

    mode: RiskMode
    reason: Reason = _WHY


class ProfilePatch(ProfileOverrides):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"max_open_positions": 3, "reason": "limit exposure while testing"}]},
    )

    reason: Reason = _WHY


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "back to defaults"}]})

    reason: Reason = _WHY


class KillSwitchBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"active": True, "reason": "exchange incident"}]},
    )

    active: Flag
    reason: Reason = _WHY


class ProfileOut(RiskProfile):
    model_config = ConfigDict(frozen=True, extra="forbid")

    overridden_fields: list[str] = Field(default_factory=list)


class ActiveProfileOut(ProfileOut):
    policy_version: int
    backend: str
    degraded: bool
    restore_error: str | None = Field(
        default=None,
        description="Why the stored policy state could not be restored; new positions are disabled until it is",
    )


class RiskModesOut(BaseModel):
    active: RiskMode
    profiles: list[ProfileOut]
    policy_version: int
    degraded: bool


class PolicyChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    from_value: Any
    to_value: Any
    reason: str
    actor: str
    trace_id: str | None
    created_at: datetime


class PolicyHistoryPage(BaseModel):
    items: list[PolicyChangeOut]
    total: int
    limit: int
    offset: int


class BlocklistOut(BaseModel):
    blocked: dict[str, str]
    kill_switch: str | None


class BoundOut(BaseModel):
    value: Any = Field(description="The limit in force (numbers as decimal strings)")
    layer: str = Field(description="The layer that set it: hard, profile, governance, mode, safety, or stack")
    source: str = Field(description="Which profile, policy, mode or state of that layer")


class EffectiveLimitsOut(BaseModel):
    """Every limit RiskGuard applies now, with the layer that set it (the strictest layer wins)."""

    limits: dict[str, BoundOut]
    hard: dict[str, str]
    layers: list[dict[str, Any]] = Field(description="What each layer says, in stack order")
    inputs: dict[str, Any] = Field(description="The account state and governor state the stack was read with")
