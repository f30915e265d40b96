"""/api/governance: the portfolio policy decided from the exposure memory, and re-deciding it now."""

from dataclasses import asdict
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.core.context import current_trace_id
from app.domains.governance.service import GovernanceService
from app.domains.policy.profiles import MIN_CONFIDENCE_DESCRIPTION
from app.domains.trading.schemas import ReasonOut, TradeCreate
from app.routes.deps import AuthorizedContainer, ContainerDep

router = APIRouter(prefix="/api/governance", tags=["governance"])
CENT = Decimal("0.01")


class LimitsOut(BaseModel):
    max_leverage: int
    min_confidence: float = Field(description=MIN_CONFIDENCE_DESCRIPTION)
    max_positions: int


class ScoreInputsOut(BaseModel):
    count: int = Field(description="Events in the window")
    avg_pnl: float | None = Field(description="Mean return per trade, percent (0.32 = +0.32 %)")
    avg_confidence: float | None
    avg_volatility: float | None
    avg_leverage: float | None
    win_rate: float | None = Field(description="Share of events with pnl > 0")
    confidence_samples: int = Field(description="Events with a confidence; the others are left out of its average")
    volatility_samples: int = Field(description="Events with a volatility; the others are left out of its average")
    previous: str | None


class HealthOut(BaseModel):
    samples: int
    window: int
    oldest: datetime | None = Field(description="Timestamp of the oldest event in the window (record order)")
    newest: datetime | None
    rejected: int = Field(description="Malformed stream entries skipped since start")
    recorded_total: int
    rebuilt: bool = Field(description="The window was rebuilt from the trades table on start")


class SymbolOut(BaseModel):
    count: int
    avg_pnl: float
    win_rate: float


class ChangeOut(BaseModel):
    previous: str
    policy: str
    score: float | None
    reason: str
    at: datetime
    trigger: str


class ConsumerOut(BaseModel):
    enabled: bool = Field(description="False without REDIS_URL or with GOVERNANCE_STREAMS_ENABLED=false")
    stream: str
    group: str
    consumer: str
    state: str = Field(description="disabled, starting, running, unreachable or stopped")
    last_id: str | None
    recorded: int
    duplicates_skipped: int
    rejected: int
    acked: int
    retries: int
    last_error: str | None
    published_at: datetime | None
    publish_error: str | None


class GovernanceStatusOut(BaseModel):
    policy: str
    limits: LimitsOut
    score: float | None = Field(description="(avg_pnl × avg_confidence × win_rate) / max(avg_volatility, 0.01)")
    reason: str | None
    decided_at: datetime | None
    inputs: ScoreInputsOut | None
    thresholds: dict[str, float] = Field(description="conservative, aggressive, hysteresis, min_samples")
    memory: HealthOut
    symbols: dict[str, SymbolOut]
    changes: list[ChangeOut] = Field(
        description="The last policy changes, newest first (stored: they survive a restart)"
    )
    restored: ChangeOut | None = Field(description="The stored decision the policy was restored from on start, if any")
    persist_error: str | None = Field(description="Why the last change could not be stored yet (retried)")
    role: str = Field(
        description="leader: this process decides, consumes the stream and publishes; follower: it adopts the "
        "leader's newest stored decision every second (several workers or instances share one lease in Redis)"
    )
    consumer: ConsumerOut


def to_out(service: GovernanceService) -> GovernanceStatusOut:
    decision, config = service.decision, service.config.policy
    limits = service.current_limits()
    return GovernanceStatusOut.model_validate(
        {
            "policy": limits.policy,
            "limits": {k: v for k, v in asdict(limits).items() if k != "policy"},
            "score": decision.score if decision else None,
            "reason": decision.reason if decision else None,
            "decided_at": service.decided_at,
            "inputs": decision.inputs if decision else None,
            "thresholds": {
                "conservative": config.conservative_threshold,
                "aggressive": config.aggressive_threshold,
                "hysteresis": config.hysteresis,
                "min_samples": config.min_samples,
            },
            "memory": {**asdict(service.memory.health()), "rebuilt": service.rebuilt},
            "symbols": {k: asdict(v) for k, v in service.memory.per_symbol().items()},
            "changes": [asdict(c) for c in service.changes()],
            "restored": asdict(service.restored) if service.restored else None,
            "persist_error": service.persist_error,
            "role": service.role,
            "consumer": asdict(service.consumer),
        }
    )


@router.get("/status", response_model=GovernanceStatusOut)
async def status(container: ContainerDep) -> GovernanceStatusOut:
    """The portfolio policy, its score and inputs, the exposure memory's health, per-symbol statistics,
    the last policy changes and the stream consumer's state."""
    return to_out(container.governance)


@router.post("/evaluate", response_model=GovernanceStatusOut)
async def evaluate(container: AuthorizedContainer) -> GovernanceStatusOut:
    """Re-decide the policy from the memory now (and publish it when Redis is configured)."""
    await container.governance.evaluate("request")
    return to_out(container.governance)


class BindingOut(BaseModel):
    code: str = Field(description="The size check that binds, e.g. POSITION_SIZE_CAP or HARD_TOTAL_EXPOSURE")
    by: str = Field(description="What sets it, e.g. `profile=NORMAL` or `hard`")


class ShouldAllowOut(BaseModel):
    allowed: bool = Field(description="What POST /trades would decide now for this intent")
    reasons: list[ReasonOut] = Field(description="Every failing check, naming the binding layer")
    assumptions: list[str]
    recommended_notional: str = Field(
        description="The largest notional (USDT, rounded down to 0.01) every size check allows for this account, "
        "side, leverage and stop: max_notional of the limit stack"
    )
    binding: BindingOut
    governance_policy: str
    operating_mode: str | None
    limits: dict[str, Any] = Field(description="The limit stack in force: value and source layer of each limit")


@router.post("/should-allow-trade", response_model=ShouldAllowOut)
async def should_allow_trade(body: TradeCreate, container: AuthorizedContainer) -> ShouldAllowOut:
    """Would this trade be allowed now, and the recommended (largest allowed) size: both answered by
    RiskGuard and the limit stack, exactly as POST /trades decides. Nothing is opened or stored."""
    market = container.trading.market(body.symbol)
    mark = await container.trading.market_price(market.symbol)
    intent = body.intent(market.symbol, mark, container.trading.market_time())
    preview = await container.trading.preview(intent, current_trace_id())
    decision = preview.decision
    return ShouldAllowOut(
        allowed=decision.allowed,
        reasons=[ReasonOut(code=r.code.value, detail=r.detail) for r in decision.reasons],
        assumptions=list(decision.assumptions),
        recommended_notional=str(preview.largest.value.quantize(CENT, rounding=ROUND_FLOOR)),
        binding=BindingOut(code=preview.largest.code, by=preview.largest.by),
        governance_policy=container.governance.policy.value,
        operating_mode=container.modes.mode.value if container.modes.mode else None,
        limits=preview.limits.as_dict()["limits"],
    )
