"""Gathering the operating-mode inputs: the Risk Brain's score, the drawdown from peak equity, the
exposure memory's win rate and the readiness components. A source that fails or hangs is `unknown`,
never a made-up value, and unknown inputs never loosen a mode."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from app.domains.governance.service import GovernanceService
from app.domains.modes.rules import Health, ModeInputs
from app.domains.riskbrain.service import RiskBrain
from app.domains.trading.service import TradingService

logger = logging.getLogger(__name__)

# /ready components whose failure stops trading (EMERGENCY) or weakens it (PRESERVATION).
CRITICAL_WHEN = {"database": ("down",), "policy_store": ("not_restored",), "safety_governor": ("not_initialised",)}
DEGRADED_WHEN = {"policy_store": ("degraded", "down"), "redis": ("down",)}


def health_of(components: dict[str, Any], new_bus_failures: int) -> tuple[Health, tuple[str, ...]]:
    """The system health from `/ready`'s components. The signal source is not part of it (RiskGuard
    judges each signal's source); the event bus counts only failures since the previous evaluation."""
    critical = [
        f"{name}={components[name].get('status')}"
        for name, statuses in CRITICAL_WHEN.items()
        if name in components and components[name].get("status") in statuses
    ]
    if critical:
        return Health.CRITICAL, tuple(critical)
    degraded = [
        f"{name}={components[name].get('status')}"
        for name, statuses in DEGRADED_WHEN.items()
        if name in components and components[name].get("status") in statuses
    ]
    if new_bus_failures > 0:
        degraded.append(f"event_bus={new_bus_failures} new handler failures")
    if degraded:
        return Health.DEGRADED, tuple(degraded)
    return Health.HEALTHY, ()


class EventCounter(Protocol):
    @property
    def failures(self) -> int: ...


class InputSources:
    def __init__(
        self,
        riskbrain: RiskBrain,
        governance: GovernanceService,
        trading: TradingService,
        bus: EventCounter,
        readiness: Callable[[], Awaitable[dict[str, Any]]],
        timeout: float,
    ) -> None:
        self._riskbrain = riskbrain
        self._governance = governance
        self._trading = trading
        self._bus = bus
        self._readiness = readiness
        self._timeout = timeout
        self._bus_failures_seen: int | None = None

    async def __call__(self) -> ModeInputs:
        risk, drawdown, health = await asyncio.gather(self._risk(), self._drawdown(), self._health())
        summary = self._governance.memory.summary() if self._governance.rebuilt else None
        return ModeInputs(
            risk_score=risk[0],
            risk_status=risk[1],
            drawdown_pct=drawdown,
            win_rate=summary.win_rate if summary is not None else None,
            trades=summary.count if summary is not None else 0,
            health=health[0],
            unhealthy=health[1],
        )

    async def _risk(self) -> tuple[float | None, str]:
        latest = self._riskbrain.latest
        try:
            if latest is None:
                async with asyncio.timeout(self._timeout):
                    latest = await self._riskbrain.current()
        except Exception as exc:  # noqa: BLE001 - an unknown input, reported as such
            logger.info("modes_risk_unavailable", extra={"error": f"{type(exc).__name__}"})
            return None, "unavailable"
        return latest.assessment.score, latest.assessment.status

    async def _drawdown(self) -> float | None:
        try:
            async with asyncio.timeout(self._timeout):
                state, account = await self._trading.safety()
        except Exception as exc:  # noqa: BLE001
            logger.info("modes_drawdown_unavailable", extra={"error": f"{type(exc).__name__}"})
            return None
        return float(state.drawdown_from_peak_pct(account["equity"]))

    async def _health(self) -> tuple[Health, tuple[str, ...]]:
        failures = self._bus.failures
        new = failures - self._bus_failures_seen if self._bus_failures_seen is not None else 0
        self._bus_failures_seen = failures
        try:
            async with asyncio.timeout(self._timeout):
                components = await self._readiness()
        except Exception as exc:  # noqa: BLE001
            logger.info("modes_health_unavailable", extra={"error": f"{type(exc).__name__}"})
            return Health.UNKNOWN, ("readiness=unavailable",)
        return health_of(components, new)
