"""Request and response bodies of the signal and model-registry API."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.money import DecimalStr
from app.core.validation import SymbolText, Timestamp
from app.domains.policy.profiles import Leverage


class SignalRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "BTCUSDT", "leverage": 2, "stop_loss_pct": 1.5}]}
    )

    symbol: SymbolText = Field(description="Binance id (BTCUSDT) or ccxt unified")
    as_of: Timestamp | None = Field(
        default=None,
        description="The signal as of this time, from candles closed by then (default: now on the price feed's "
        "clock, simulated time for the bundled replay)",
    )
    leverage: Leverage | None = Field(
        default=None,
        description="Leverage to size for; without it no size is suggested (never a default)",
    )
    stop_loss_pct: Decimal | None = Field(
        default=None,
        gt=0,
        lt=100,
        decimal_places=8,
        allow_inf_nan=False,
        description="Stop distance in percent (default: 2 %)",
    )


class SizingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    notional: DecimalStr | None = Field(description="quantity × price: what POST /trades fills at the same price")
    leverage: DecimalStr | None
    multiplier: float | None
    source: str
    skipped_reason: str | None = Field(description="Why no size, e.g. BELOW_EXCHANGE_MINIMUM naming the minimum")
    limited_by: str | None
    quantity: DecimalStr | None = Field(default=None, description="Contracts, truncated to the market's amount step")


class VoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    version_id: str | None
    side: str | None = Field(description="null when the member was not run")
    probabilities: dict[str, float] | None = Field(description="null when the member was not run")
    weight: float
    ran: bool = Field(description="False for a member with zero ensemble weight: it is not run at inference")
    note: str | None


class SignalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str
    side: str
    confidence: float = Field(
        description="What RiskGuard's minimum confidence compares with; its meaning is `confidence_kind`: "
        "P(TP1 before the stop within the max hold) from the meta layer for a LONG/SHORT call, else the "
        "direction probability (every HOLD, or a champion without a meta layer) or the fallback's own confidence"
    )
    direction_confidence: float | None = Field(
        default=None,
        description="The direction layer: the ensemble's probability of its call (argmax class); null for the fallback",
    )
    confidence_kind: Literal["p_tp_before_sl", "direction_probability", "rule_confidence"] = Field(
        default="direction_probability", description="What `confidence` is (see `confidence_detail`)"
    )
    confidence_detail: str | None = Field(
        default=None,
        description="The barriers a P(TP before SL) refers to, or why `confidence` is not one (HOLD, no meta layer)",
    )
    source: str
    regime: str | None
    strategy: str | None
    votes: list[VoteOut]
    as_of: datetime = Field(
        description="Close time of the newest candle used: only candles closed by the requested time are used"
    )
    model_version_id: str | None
    price: float = Field(description="Close of the newest candle used")
    volatility: float | None
    detail: str | None
    stale: bool = Field(
        description="The newest candle closed more than SIGNAL_MAX_AGE_SECONDS before the requested time (or now)"
    )
    age_seconds: float = Field(description="Seconds from `as_of` to the requested time (or now)")
    sizing: SizingOut | None = None


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: uuid.UUID
    kind: str
    status: str
    symbols: list[str]
    timeframe: str
    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime
    features: list[str]
    code_version: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    artifact_sha256: str
    created_at: datetime
    promoted_at: datetime | None
    retired_at: datetime | None


class ModelPage(BaseModel):
    items: list[ModelVersionOut]
    total: int
    limit: int
    offset: int


class SymbolScoreOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str
    score: float
    liquidity: float
    trend: float
    volatility: float
    candles: int


class ExclusionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str
    reason: str


class UniverseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    as_of_ms: int
    scores: list[SymbolScoreOut]
    selected: list[str]
    excluded: list[ExclusionOut]
