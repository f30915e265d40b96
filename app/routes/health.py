"""Liveness, readiness (the truth about each component) and Prometheus metrics."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.metrics import DRAWDOWN_PCT, RISK_PROFILE_ACTIVE
from app.domains.policy.profiles import RiskMode
from app.readiness import readiness
from app.routes.deps import ContainerDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(container: ContainerDep) -> JSONResponse:
    """Readiness: whether this process can do its job, within a bound.

    `ready`: the database answers, the account exists, its open positions are loaded and the
    policy store is live; `degraded` (200): the policy store serves its last known state;
    `not_ready` (503): no database, no account, or the positions not loaded yet. The signal
    source, the event bus, the exchange's monitor and the governor are reported per component and
    do not change the top-level status (a halted governor is the service doing its job).
    """
    overall, code, components = await readiness(container)
    return JSONResponse({"status": overall, "components": components}, status_code=code)


@router.get("/metrics", include_in_schema=False)
async def metrics(container: ContainerDep) -> Response:
    active = container.policy_store.snapshot.mode
    for mode in RiskMode:
        RISK_PROFILE_ACTIVE.labels(profile=mode.value).set(1 if mode is active else 0)
    try:
        state, account = await container.trading.safety()
        DRAWDOWN_PCT.set(float(state.daily_drawdown_pct(account["equity"])))
    except Exception:  # noqa: BLE001, S110 - the gauge keeps its last value; /ready reports the database
        pass
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
