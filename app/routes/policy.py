"""/api/v2/policy: risk profiles, runtime mode switches, overrides, audit trail."""

import weakref
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.bootstrap import Container
from app.core.context import current_trace_id
from app.core.validation import Label
from app.domains.policy.schemas import (
    ActiveProfileOut,
    EffectiveLimitsOut,
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
from app.routes.deps import Actor, AuthorizedContainer, ContainerDep, Limit, Offset

router = APIRouter(prefix="/api/v2/policy", tags=["policy"])


def _active(snapshot: PolicySnapshot, store: PolicyStore) -> ActiveProfileOut:
    profile = snapshot.profile
    return ActiveProfileOut(
        **profile.model_dump(),
        overridden_fields=sorted(snapshot.state.overrides.get(profile.name.value, {})),
        policy_version=snapshot.state.version,
        backend=store.backend.name,
        degraded=store.degraded,
        restore_error=snapshot.restore_error,
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


class _Rendered(Response):
    """A response whose body and headers were rendered before: built per request without
    re-encoding, and owning its header list (nothing is shared between requests)."""

    def __init__(self, template: Response) -> None:
        self.status_code = template.status_code
        self.body = template.body
        self.background = None
        self.raw_headers = list(template.raw_headers)


_rendered: "weakref.WeakKeyDictionary[PolicyStore, tuple[PolicySnapshot, bool, Response]]" = weakref.WeakKeyDictionary()


def _active_response(store: PolicyStore) -> Response:
    """The active profile, rendered once per snapshot: the hottest read costs no validation."""
    snapshot, degraded = store.snapshot, store.degraded
    cached = _rendered.get(store)
    if cached is None or cached[0] is not snapshot or cached[1] != degraded:
        template = Response(_active(snapshot, store).model_dump_json(), media_type="application/json")
        cached = _rendered[store] = (snapshot, degraded, template)
    return _Rendered(cached[2])


@router.get("/risk-profile", response_model=ActiveProfileOut)
async def risk_profile(request: Request) -> Response:
    container: Container = request.app.state.container
    return _active_response(container.policy_store)


@router.post("/risk-mode", response_model=ActiveProfileOut)
async def switch_risk_mode(body: RiskModeSwitch, container: AuthorizedContainer, actor: Actor) -> ActiveProfileOut:
    snapshot = await container.policy.switch_mode(body.mode, body.reason, actor, current_trace_id())
    return _active(snapshot, container.policy_store)


@router.patch("/risk-profile", response_model=ActiveProfileOut)
async def override_risk_profile(body: ProfilePatch, container: AuthorizedContainer, actor: Actor) -> ActiveProfileOut:
    snapshot = await container.policy.override(body, body.reason, actor, current_trace_id())
    return _active(snapshot, container.policy_store)


@router.post("/risk-profile/reset", response_model=ActiveProfileOut)
async def reset_risk_profile(body: ReasonBody, container: AuthorizedContainer, actor: Actor) -> ActiveProfileOut:
    snapshot = await container.policy.reset_overrides(body.reason, actor, current_trace_id())
    return _active(snapshot, container.policy_store)


@router.get("/history", response_model=PolicyHistoryPage)
async def history(
    container: ContainerDep,
    limit: Limit = 50,
    offset: Offset = 0,
    kind: Annotated[Label | None, Query()] = None,
) -> PolicyHistoryPage:
    items, total = await container.policy.history(limit, offset, kind)
    return PolicyHistoryPage(
        items=[PolicyChangeOut.model_validate(i) for i in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/effective", response_model=EffectiveLimitsOut)
async def effective_limits(container: ContainerDep) -> EffectiveLimitsOut:
    """The limit stack in force: each limit's value and source layer, and the stack's inputs."""
    state, account = await container.trading.safety()
    view = container.governor.view(state, container.trading.clock())
    snapshot = container.policy_store.snapshot
    limits = container.guard.limits(snapshot.profile, view)
    return EffectiveLimitsOut(
        **limits.as_dict(),
        inputs={
            "profile": snapshot.profile.name.value,
            "policy_version": snapshot.state.version,
            "safety_state": view.state,
            "safety_halted": view.halted,
            "leverage_multiplier": str(view.leverage_multiplier),
            "equity": str(account["equity"]),
            "open_positions": account["open_positions"],
            "open_notional": str(account["open_notional"]),
            "used_margin": str(account["used_margin"]),
            "assumed_stop_distance_pct": str(container.guard.config.assumed_stop_distance_pct),
        },
    )
