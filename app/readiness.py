"""Readiness: the truth about each component, within a bound.

Used by `/ready` and by the operating modes (system health is one of their inputs). Answers within
a bound even when the database or Redis hangs; a body holds only short error classes ("timeout",
"connection_refused"): hosts, SQL and driver messages go to the log, under the trace id.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from app.core.db import database_failure
from app.core.errors import ServiceUnavailable
from app.domains.policy.backends import PolicyBackendError

if TYPE_CHECKING:  # the container holds the operating modes, which read this module
    from app.bootstrap import Container

logger = logging.getLogger(__name__)

READY_SLACK_SECONDS = 0.5
"""/ready gives each check the database connect timeout plus this; the checks run concurrently."""


def _budget(container: "Container") -> float:
    return container.settings.db_connect_timeout_seconds + READY_SLACK_SECONDS


def error_class(exc: BaseException) -> str:
    """A short, public name for a failure; never the message (it may hold hosts or SQL)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    kind = database_failure(exc)
    if kind is not None:
        return kind
    link: BaseException | None = exc
    for _ in range(8):
        if link is None:
            break
        if isinstance(link, TimeoutError) or "Timeout" in type(link).__name__:
            return "timeout"
        if isinstance(link, ConnectionRefusedError) or "refused" in str(link).lower():
            return "connection_refused"
        if isinstance(link, ConnectionError):
            return "connection_reset"
        link = link.__cause__ or link.__context__
    return "unavailable"


def _logged(component: str, exc: BaseException) -> str:
    kind = error_class(exc)
    logger.warning(
        "ready_component_down",
        extra={"component": component, "error_class": kind, "error": f"{type(exc).__name__}: {exc}"[:500]},
    )
    return kind


async def _bounded(component: str, check: Awaitable[dict[str, Any]], budget: float) -> dict[str, Any]:
    """`check`'s answer, or `down` with a short error class if it fails or outlasts `budget`."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(budget):
            return await check
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure, as a class
        return {
            "status": "down",
            "error": _logged(component, exc),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }


async def _database(container: "Container") -> dict[str, Any]:
    started = time.perf_counter()
    async with container.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return {
        "status": "up",
        "dialect": container.engine.dialect.name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def _safety(container: "Container") -> dict[str, Any]:
    try:
        state, _ = await container.trading.safety()
    except ServiceUnavailable:
        return {"status": "not_initialised", "error": "the account has no row yet"}
    view = container.governor.view(state, container.trading.clock())
    return {"status": "halted" if view.halted else "up", "state": view.state, "reason": state.reason}


def _last_error_class(text_: str | None) -> str | None:
    """The policy store keeps its last error as text; publish only its class."""
    if text_ is None or text_ == "not started":
        return text_
    lowered = text_.lower()
    if "timeout" in lowered or "timed out" in lowered:
        return "timeout"
    if "refused" in lowered:
        return "connection_refused"
    return "unavailable"


async def _policy(container: "Container") -> dict[str, Any]:
    store = container.policy_store
    backend: dict[str, Any] = {"name": store.backend.name}
    try:
        started = time.perf_counter()
        await store.backend.ping()
        backend.update(status="up", latency_ms=round((time.perf_counter() - started) * 1000, 2))
    except PolicyBackendError as exc:
        backend.update(status="down", error=_logged("policy_backend", exc))
    synced = store.last_sync_monotonic
    return {
        "status": "not_restored"
        if store.snapshot.restore_error
        else ("degraded" if store.degraded or backend["status"] != "up" else "up"),
        "restore_error": store.snapshot.restore_error,
        "backend": backend,
        "active_mode": store.snapshot.mode.value,
        "policy_version": store.snapshot.state.version,
        "serving": "last known profile" if store.degraded else "live",
        "seconds_since_sync": None if synced is None else round(time.monotonic() - synced, 3),
        "last_error": _last_error_class(store.last_error),
    }


async def readiness(container: "Container") -> tuple[str, int, dict[str, Any]]:
    """(status, HTTP code, components): `ready`, `degraded` (200) or `not_ready` (503)."""
    budget = _budget(container)
    database, policy, safety = await asyncio.gather(
        _bounded("database", _database(container), budget),
        _bounded("policy_store", _policy(container), budget),
        _bounded("safety_governor", _safety(container), budget),
    )
    if "backend" not in policy:
        policy["backend"] = {"name": container.policy_store.backend.name, "status": "unknown"}
    components: dict[str, Any] = {
        "database": database,
        "policy_store": policy,
        "redis": policy["backend"] if policy["backend"]["name"] == "redis" else {"status": "not_configured"},
        "event_bus": {
            "status": "up" if container.bus.failures == 0 else "degraded",
            "handler_failures": container.bus.failures,
        },
    }
    execution, monitor = container.trading.execution, container.monitor
    venue = execution.venue.ready()
    if not execution.loaded:
        exchange_status = "loading"
    elif not venue.reconciled:
        exchange_status = "not_reconciled"  # live: no new trade until the exchange matches the tables
    else:
        exchange_status = "up" if monitor.last_error is None else "degraded"
    components["exchange"] = {
        "status": exchange_status,
        "name": execution.name,
        "reconciled": venue.reconciled,
        "reconciliation": venue.reason,
        "reconciled_at": venue.checked_at.isoformat() if venue.checked_at else None,
        "feed": execution.feed.name,
        "feed_time": execution.feed.now().isoformat(),
        "open_positions": len(execution.open_rows()),
        "monitor_bars_applied": monitor.bars_applied,
        "monitor_error": monitor.last_error,
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
    if database["status"] != "up":
        safety = {"status": "unknown", "error": "database_down"}
    components["safety_governor"] = safety
    # positions not read yet, or a live exchange not reconciled: trades answer 503
    loading = components["exchange"]["status"] in ("loading", "not_reconciled")
    if database["status"] != "up" or safety["status"] not in ("up", "halted") or loading:
        overall, code = "not_ready", 503
    elif policy["status"] != "up":
        overall, code = "degraded", 200
    else:
        overall, code = "ready", 200
    return overall, code, components
