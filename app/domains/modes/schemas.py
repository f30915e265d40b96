"""API shapes of the operating modes."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.validation import Reason
from app.domains.modes.rules import OperatingMode


class PinBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"mode": "PRESERVATION", "reason": "exchange maintenance"}]}
    )

    mode: OperatingMode = Field(description="The mode to hold until unpinned")
    reason: Reason = Field(description="Why; kept in the trail")


class UnpinBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "maintenance over"}]})

    reason: Reason = Field(description="Why; kept in the trail")


class PinOut(BaseModel):
    mode: OperatingMode
    reason: str
    actor: str
    at: datetime


class EvaluationOut(BaseModel):
    mode: OperatingMode = Field(description="The decided mode after hysteresis")
    rule_mode: OperatingMode = Field(description="What the rules alone choose from these inputs")
    reason: str
    inputs: dict[str, Any] = Field(
        description="risk_score (0-100), risk_status, drawdown_pct (from peak equity), win_rate, trades, health, "
        "unhealthy components"
    )
    evaluated_at: datetime


class TrailEntryOut(BaseModel):
    id: int | None = Field(description="None while the row is not stored yet (retried)")
    kind: str = Field(description="decision, pin or unpin")
    at: datetime
    previous: str | None = Field(description="The mode in force before")
    mode: str | None = Field(description="The mode in force after")
    decided: str | None
    pinned: str | None
    reason: str
    inputs: dict[str, Any]
    actor: str


class ModeStatusOut(BaseModel):
    role: str = Field(
        description="leader: this process decides the mode; follower: it adopts the newest stored row every second"
    )
    enabled: bool = Field(description="MODES_ENABLED: the mode is decided on a timer and is a layer of the stack")
    restored: bool = Field(description="The stored trail was read on start; until then no new position is allowed")
    restore_error: str | None
    mode: OperatingMode | None = Field(description="In force: the pin when one holds, else the decided mode")
    decided: OperatingMode | None
    since: datetime | None = Field(description="When the decided mode took effect (survives a restart)")
    pinned: PinOut | None
    layer: dict[str, Any] = Field(description="The mode's layer of the limit stack: what it allows")
    last_evaluation: EvaluationOut | None
    rules: dict[str, float] = Field(description="Thresholds, hysteresis margins and the minimum dwell time")
    persist_error: str | None = Field(description="Why the last change is not stored yet (retried)")
    decisions: list[TrailEntryOut] = Field(description="The last changes, pins and unpins, newest first")


class ModeDecisionsPage(BaseModel):
    items: list[TrailEntryOut]
    limit: int
    offset: int
