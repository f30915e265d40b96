"""Liveness, readiness (the truth about each component) and Prometheus metrics."""

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.bootstrap import Container
from app.core.metrics import DRAWDOWN_PCT, RISK_PROFILE_ACTIVE
from app.domains.policy.backends import PolicyBackendError
from app.domains.policy.profiles import RiskMode
from app.routes.deps import ContainerDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def _database(container: Container) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with container.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as it is
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "status": "up",
        "dialect": container.engine.dialect.name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def _policy(container: Container) -> dict[str, Any]:
    store = container.policy_store
    backend: dict[str, Any] = {"name": store.backend.name}
    try:
        started = time.perf_counter()
        await store.backend.ping()
        backend.update(status="up", latency_ms=round((time.perf_counter() - started) * 1000, 2))
    except PolicyBackendError as exc:
        backend.update(status="down", error=str(exc)[:300])
    synced = store.last_sync_monotonic
    return {
        "status": "degraded" if store.degraded or backend["status"] != "up" else "up",
        "backend": backend,
        "active_mode": store.snapshot.mode.value,
        "policy_version": store.snapshot.state.version,
        "serving": "last known profile" if store.degraded else "live",
        "seconds_since_sync": None if synced is None else round(time.monotonic() - synced, 3),
        "last_error": store.last_error,
    }


@router.get("/ready")
async def ready(container: ContainerDep) -> JSONResponse:
    """Readiness: 200 when the database answers (status `ready` or `degraded`), else 503."""
    database, policy = await asyncio.gather(_database(container), _policy(container))
    components: dict[str, Any] = {
        "database": database,
        "policy_store": policy,
        "redis": policy["backend"] if policy["backend"]["name"] == "redis" else {"status": "not_configured"},
        "event_bus": {
            "status": "up" if container.bus.failures == 0 else "degraded",
            "handler_failures": container.bus.failures,
        },
    }
    signals = container.signals
    champion = signals.champion
    components["signals"] = {
        "status": "up" if champion is not None else ("fallback" if signals.allow_fallback else "down"),
        "champion_ensemble": str(champion.version.id) if champion is not None else None,
        "serving": "ensemble"
        if champion is not None
        else ("fallback_momentum" if signals.allow_fallback else "nothing"),
        "fallback_signals": signals.stats.fallback_signals,
        "last_fallback_at": signals.stats.last_fallback_at.isoformat() if signals.stats.last_fallback_at else None,
    }
    if database["status"] == "up":
        try:
            state, _ = await container.trading.safety()
            view = container.governor.view(state, container.trading.clock())
            components["safety_governor"] = {
                "status": "halted" if view.halted else "up",
                "state": view.state,
                "reason": state.reason,
            }
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure as it is
            components["safety_governor"] = {"status": "down", "error": str(exc)[:300]}
    else:
        components["safety_governor"] = {"status": "unknown", "error": "database down"}
    if database["status"] != "up":
        overall, code = "not_ready", 503
    elif any(c.get("status") not in ("up", "not_configured", "halted") for c in components.values()):
        overall, code = "degraded", 200
    else:
        overall, code = "ready", 200
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
