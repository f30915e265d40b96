"""/api/v2/policy: risk profiles, runtime mode switches, overrides, audit trail."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.domains.policy.schemas import (
    ActiveProfileOut,
    PolicyChangeOut,
    PolicyHistoryPage,
    ProfileOut,
    ProfilePatch,
    ReasonBody,
    RiskModesOut,
    RiskModeSwitch,
)
from app.domains.policy.state import PolicySnapshot
from app.domains.policy.store import PolicyStore
from app.routes.deps import Actor, ContainerDep, TraceId

router = APIRouter(prefix="/api/v2/policy", tags=["policy"])


def _active(snapshot: PolicySnapshot, store: PolicyStore) -> ActiveProfileOut:
    profile = snapshot.profile
    return ActiveProfileOut(
        **profile.model_dump(),
        overridden_fields=sorted(snapshot.state.overrides.get(profile.name.value, {})),
        policy_version=snapshot.state.version,
        backend=store.backend.name,
        degraded=store.degraded,
    )


@router.get("/risk-modes", response_model=RiskModesOut)
async def risk_modes(container: ContainerDep) -> RiskModesOut:
    snapshot = container.policy_store.snapshot
    return RiskModesOut(
        active=snapshot.mode,
        profiles=[
            ProfileOut(
                **p.model_dump(),
                overridden_fields=sorted(snapshot.state.overrides.get(m.value, {})),
            )
            for m, p in snapshot.profiles.items()
        ],
        policy_version=snapshot.state.version,
        degraded=container.policy_store.degraded,
    )


@router.get("/risk-profile", response_model=ActiveProfileOut)
async def risk_profile(container: ContainerDep) -> ActiveProfileOut:
    return _active(container.policy_store.snapshot, container.policy_store)


@router.post("/risk-mode", response_model=ActiveProfileOut)
async def switch_risk_mode(
    body: RiskModeSwitch, container: ContainerDep, actor: Actor, trace_id: TraceId
) -> ActiveProfileOut:
    snapshot = await container.policy.switch_mode(body.mode, body.reason, actor, trace_id)
    return _active(snapshot, container.policy_store)


@router.patch("/risk-profile", response_model=ActiveProfileOut)
async def override_risk_profile(
    body: ProfilePatch, container: ContainerDep, actor: Actor, trace_id: TraceId
) -> ActiveProfileOut:
    snapshot = await container.policy.override(body, body.reason, actor, trace_id)
    return _active(snapshot, container.policy_store)


@router.post("/risk-profile/reset", response_model=ActiveProfileOut)
async def reset_risk_profile(
    body: ReasonBody, container: ContainerDep, actor: Actor, trace_id: TraceId
) -> ActiveProfileOut:
    snapshot = await container.policy.reset_overrides(body.reason, actor, trace_id)
    return _active(snapshot, container.policy_store)


@router.get("/history", response_model=PolicyHistoryPage)
async def history(
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    kind: Annotated[str | None, Query(max_length=32)] = None,
) -> PolicyHistoryPage:
    items, total = await container.policy.history(limit, offset, kind)
    return PolicyHistoryPage(
        items=[PolicyChangeOut.model_validate(i) for i in items],
        total=total,
        limit=limit,
        offset=offset,
    )
