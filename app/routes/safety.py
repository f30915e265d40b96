"""/api/v2/safety: the SafetyGovernor's state and the operator reset."""

from decimal import Decimal

from fastapi import APIRouter

from app.bootstrap import Container
from app.core.context import current_trace_id
from app.domains.policy.schemas import ReasonBody
from app.domains.safety.schemas import SafetyStatusOut
from app.routes.deps import Actor, AuthorizedContainer, ContainerDep

router = APIRouter(prefix="/api/v2/safety", tags=["safety"])

Q = Decimal("0.0001")


async def _status(container: Container) -> SafetyStatusOut:
    state, account = await container.trading.safety()
    profile = container.policy_store.snapshot.profile
    view = container.governor.view(state, container.trading.clock())
    return SafetyStatusOut(
        state=view.state,
        halted=view.halted,
        emergency=state.emergency,
        reason=state.reason,
        halted_until=state.halted_until,
        equity=account["equity"],
        day=state.day,
        day_start_equity=state.day_start_equity,
        peak_equity=max(state.peak_equity, account["equity"]),
        daily_drawdown_pct=state.daily_drawdown_pct(account["equity"]).quantize(Q),
        drawdown_from_peak_pct=state.drawdown_from_peak_pct(account["equity"]).quantize(Q),
        max_daily_drawdown_pct=profile.max_daily_drawdown_pct,
        emergency_drawdown_pct=profile.emergency_drawdown_pct,
        losing_streak=state.losing_streak,
        winning_streak=state.winning_streak,
        leverage_multiplier=state.leverage_multiplier,
        effective_max_leverage=profile.max_leverage * state.leverage_multiplier,
        profile_name=profile.name.value,
        updated_at=state.updated_at,
    )


@router.get("/status", response_model=SafetyStatusOut)
async def status(container: ContainerDep) -> SafetyStatusOut:
    return await _status(container)


@router.post("/reset", response_model=SafetyStatusOut)
async def reset(body: ReasonBody, container: AuthorizedContainer, actor: Actor) -> SafetyStatusOut:
    """Lift an emergency halt (audited). A daily halt still applies if today's drawdown calls for it."""
    await container.trading.reset_safety(body.reason, actor, current_trace_id())
    return await _status(container)
