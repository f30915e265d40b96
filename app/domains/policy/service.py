"""Policy changes: validated, audited and made durable in one transaction (see PolicyStore.update).

If the database or the backend refuses, nothing is changed and the caller gets the error
(503 when a dependency is down); a change is never in force without its audit row.
"""

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.bus import Event, EventBus
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.domains.policy.events import PolicyChanged, RiskModeChanged
from app.domains.policy.models import PolicyChange
from app.domains.policy.profiles import ProfileOverrides, RiskMode, effective_profile
from app.domains.policy.repository import PolicyRepository
from app.domains.policy.state import PolicySnapshot, PolicyState
from app.domains.policy.store import PolicyStore

logger = logging.getLogger(__name__)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, bool | int | str) or v is None else str(v)) for k, v in values.items()}


class PolicyService:
    def __init__(
        self,
        store: PolicyStore,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self._sessions = sessions
        self._bus = bus
        self._clock = clock

    @property
    def snapshot(self) -> PolicySnapshot:
        return self.store.snapshot

    async def switch_mode(self, mode: RiskMode, reason: str, actor: str, trace_id: str) -> PolicySnapshot:
        before, after = await self._change(
            lambda s: replace(s, mode=mode),
            kind="RISK_MODE",
            describe=lambda b, a: (b.mode.value, a.mode.value),
            reason=reason,
            actor=actor,
            trace_id=trace_id,
        )
        event: Event = RiskModeChanged(
            from_mode=before.mode.value,
            to_mode=after.mode.value,
            reason=reason,
            actor=actor,
            trace_id=trace_id,
        )
        self._bus.publish(event)
        return self.store.snapshot

    async def override(self, overrides: ProfileOverrides, reason: str, actor: str, trace_id: str) -> PolicySnapshot:
        given = _jsonable(overrides.given())

        def mutate(s: PolicyState) -> PolicyState:
            merged = {**s.overrides.get(s.mode.value, {}), **given}
            try:
                effective_profile(s.mode, merged)
            except ValidationError as exc:
                raise InvalidRequest(
                    f"overrides rejected for profile {s.mode.value}: "
                    + "; ".join(e["msg"] for e in exc.errors(include_url=False))
                ) from exc
            return replace(s, overrides={**s.overrides, s.mode.value: merged})

        await self._change(
            mutate,
            kind="PROFILE_OVERRIDE",
            describe=lambda b, a: (
                {
                    "profile": b.mode.value,
                    "overrides": b.overrides.get(b.mode.value, {}),
                },
                {
                    "profile": a.mode.value,
                    "overrides": a.overrides.get(a.mode.value, {}),
                },
            ),
            reason=reason,
            actor=actor,
            trace_id=trace_id,
        )
        return self.store.snapshot

    async def reset_overrides(self, reason: str, actor: str, trace_id: str) -> PolicySnapshot:
        def mutate(s: PolicyState) -> PolicyState:
            if s.mode.value not in s.overrides:
                raise Conflict(f"profile {s.mode.value} has no overrides to reset")
            return replace(s, overrides={k: v for k, v in s.overrides.items() if k != s.mode.value})

        await self._change(
            mutate,
            kind="PROFILE_RESET",
            describe=lambda b, a: (
                {
                    "profile": b.mode.value,
                    "overrides": b.overrides.get(b.mode.value, {}),
                },
                {"profile": a.mode.value, "overrides": {}},
            ),
            reason=reason,
            actor=actor,
            trace_id=trace_id,
        )
        return self.store.snapshot

    async def block_symbol(self, symbol: str, reason: str, actor: str, trace_id: str) -> PolicySnapshot:
        await self._change(
            lambda s: replace(s, blocked_symbols={**s.blocked_symbols, symbol: reason}),
            kind="SYMBOL_BLOCKED",
            describe=lambda b, a: (
                {"symbol": symbol, "blocked": symbol in b.blocked_symbols},
                {"symbol": symbol, "blocked": True},
            ),
            reason=reason,
            actor=actor,
            trace_id=trace_id,
        )
        return self.store.snapshot

    async def unblock_symbol(self, symbol: str, reason: str, actor: str, trace_id: str) -> PolicySnapshot:
        def mutate(s: PolicyState) -> PolicyState:
            if symbol not in s.blocked_symbols:
                raise NotFound(f"symbol {symbol} is not blocked")
            return replace(
                s,
                blocked_symbols={k: v for k, v in s.blocked_symbols.items() if k != symbol},
            )

        await self._change(
            mutate,
            kind="SYMBOL_UNBLOCKED",
            describe=lambda b, a: (
                {"symbol": symbol, "blocked": True},
                {"symbol": symbol, "blocked": False},
            ),
            reason=reason,
            actor=actor,
            trace_id=trace_id,
        )
        return self.store.snapshot

    async def set_kill_switch(self, active: bool, reason: str, actor: str, trace_id: str) -> PolicySnapshot:
        await self._change(
            lambda s: replace(s, kill_switch=reason if active else None),
            kind="KILL_SWITCH",
            describe=lambda b, a: (
                {"active": b.kill_switch is not None},
                {"active": a.kill_switch is not None},
            ),
            reason=reason,
            actor=actor,
            trace_id=trace_id,
        )
        return self.store.snapshot

    async def history(self, limit: int, offset: int, kind: str | None) -> tuple[list[PolicyChange], int]:
        async with self._sessions() as session:
            return await PolicyRepository(session).history(limit, offset, kind)

    async def _change(
        self,
        mutate: Callable[[PolicyState], PolicyState],
        *,
        kind: str,
        describe: Callable[[PolicyState, PolicyState], tuple[Any, Any]],
        reason: str,
        actor: str,
        trace_id: str,
    ) -> tuple[PolicyState, PolicyState]:
        audited: list[PolicyChange] = []

        def audit(before: PolicyState, after: PolicyState) -> PolicyChange:
            from_value, to_value = describe(before, after)
            audited.append(
                PolicyChange(
                    kind=kind,
                    from_value=from_value,
                    to_value=to_value,
                    reason=reason,
                    actor=actor,
                    trace_id=trace_id,
                    created_at=self._clock(),
                )
            )
            return audited[-1]

        before, after = await self.store.update(mutate, audit)
        from_value, to_value = audited[-1].from_value, audited[-1].to_value
        logger.info(
            "policy_changed",
            extra={
                "kind": kind,
                "from": from_value,
                "to": to_value,
                "reason": reason,
                "actor": actor,
            },
        )
        if kind != "RISK_MODE":
            self._bus.publish(
                PolicyChanged(
                    kind=kind,
                    from_value=from_value,
                    to_value=to_value,
                    reason=reason,
                    actor=actor,
                    trace_id=trace_id,
                )
            )
        return before, after
