"""OperatingModes: decides the mode on a timer, on every closed trade and on demand; keeps operator
pins; stores every change; restores the mode in force on start.

Durability: a mode change is applied at once and its row written in the same evaluation (a failed
write is kept and retried: until it lands, a restart restores the previous, stricter-or-equal row only
if the change loosened; a tightening that did not land is re-decided from the same inputs). A pin or
unpin is written first and applied only once stored: audited or not made. Until the trail has been
read on start the mode layer allows no new position (`NOT_RESTORED`), so a restart never loosens.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.bus import Event
from app.core.db import database_failure
from app.core.errors import Conflict, ServiceUnavailable
from app.domains.modes import repository
from app.domains.modes.models import ModeDecisionRecord
from app.domains.modes.rules import ModeConfig, ModeDecision, ModeInputs, OperatingMode, decide_mode, mode_layer
from app.domains.risk.stack import Layer, LayerLimits

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "operating-modes"
NOT_RESTORED = LayerLimits(Layer.MODE, "NOT_RESTORED", new_positions_allowed=False)
UNDECIDED = LayerLimits(Layer.MODE, "UNDECIDED")


@dataclass(frozen=True)
class ModesConfig:
    rules: ModeConfig = field(default_factory=ModeConfig)
    interval_seconds: float = 30.0
    keep_decisions: int = 20
    retry_seconds: float = 1.0


@dataclass(frozen=True)
class Pin:
    mode: OperatingMode
    reason: str
    actor: str
    at: datetime


@dataclass(frozen=True)
class TrailEntry:
    """A row of the trail as shown; `id` is None until it is stored."""

    id: int | None
    kind: str
    at: datetime
    previous: str | None
    mode: str | None
    decided: str | None
    pinned: str | None
    reason: str
    inputs: dict[str, Any]
    actor: str


def _entry(row: ModeDecisionRecord) -> TrailEntry:
    return TrailEntry(
        row.id,
        row.kind,
        row.decided_at,
        row.previous,
        row.mode,
        row.decided,
        row.pinned,
        row.reason,
        row.inputs,
        row.actor,
    )


def _mode(name: str | None) -> OperatingMode | None:
    return OperatingMode(name) if name is not None and name in OperatingMode.__members__ else None


class OperatingModes:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        account_id: str,
        config: ModesConfig,
        clock: Callable[[], datetime],
        inputs: Callable[[], Awaitable[ModeInputs]],
    ) -> None:
        self._sessions = sessions
        self._account_id = account_id
        self.config = config
        self._clock = clock
        self._inputs = inputs
        self._lock = asyncio.Lock()
        self._restored = False
        self.restore_error: str | None = None
        self.persist_error: str | None = None
        self._decided: OperatingMode | None = None
        self._since: datetime | None = None
        self._pin: Pin | None = None
        self._last: ModeDecision | None = None
        self._evaluated_at: datetime | None = None
        self._trail: deque[TrailEntry] = deque(maxlen=config.keep_decisions)
        self._pending: list[ModeDecisionRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.evaluations = 0

    # --- what is in force ----------------------------------------------------------------------------
    @property
    def restored(self) -> bool:
        return self._restored

    @property
    def mode(self) -> OperatingMode | None:
        """The mode in force: the pin when one holds, else the decided mode (None before the first)."""
        return self._pin.mode if self._pin is not None else self._decided

    @property
    def decided(self) -> OperatingMode | None:
        return self._decided

    @property
    def since(self) -> datetime | None:
        return self._since

    @property
    def pin(self) -> Pin | None:
        return self._pin

    @property
    def last(self) -> ModeDecision | None:
        return self._last

    @property
    def evaluated_at(self) -> datetime | None:
        return self._evaluated_at

    def trail(self) -> list[TrailEntry]:
        """The last changes, pins and unpins, newest first; pending rows (not stored yet) have no id."""
        return [_entry(row) for row in reversed(self._pending)] + list(self._trail)

    def limit_layer(self) -> LayerLimits:
        """The mode in force as a layer of RiskGuard's limit stack (no I/O: read under the account lock)."""
        if not self._restored:
            return NOT_RESTORED
        mode = self.mode
        return UNDECIDED if mode is None else mode_layer(mode)

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore the trail (a database that is down is retried in the background), then decide on
        a timer; the first decision is taken at once."""
        await self._try_restore()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="operating-modes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failing: str | None = None
        while True:
            try:
                if not self._restored:
                    await self._try_restore()
                if self._restored:
                    await self.evaluate("timer" if self.evaluations else "start")
                    failing = None
            except Exception as exc:
                cause = database_failure(exc) or type(exc).__name__
                if cause != failing:
                    logger.warning("modes_evaluation_failed", extra={"error_class": cause}, exc_info=exc)
                failing = cause
            delay = self.config.interval_seconds if self._restored else self.config.retry_seconds
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def on_trade_closed(self, _: Event) -> None:
        """A closed trade changes the win rate, the drawdown and the risk score: decide again soon."""
        self._wake.set()

    async def _try_restore(self) -> None:
        try:
            async with self._sessions() as session:
                rows = await repository.recent(session, self._account_id, self.config.keep_decisions)
        except Exception as exc:
            kind = database_failure(exc)
            if kind is None:
                raise
            if self.restore_error != kind:
                logger.error("modes_restore_waiting_for_database", extra={"error_class": kind})
            self.restore_error = kind
            return
        self._restore(rows)

    def _restore(self, rows: list[ModeDecisionRecord]) -> None:
        if rows:
            newest = rows[0]
            self._decided = _mode(newest.decided)
            decisions = [r for r in rows if r.kind == "decision"]
            self._since = decisions[0].decided_at if decisions else newest.decided_at
            pinned = _mode(newest.pinned)
            if pinned is not None:
                pin_row = next((r for r in rows if r.kind == "pin"), newest)
                self._pin = Pin(pinned, pin_row.reason, pin_row.actor, pin_row.decided_at)
            self._trail.extend(_entry(r) for r in rows)
            logger.info(
                "modes_restored",
                extra={"decided": newest.decided, "pinned": newest.pinned, "since": self._since.isoformat()},
            )
        self._restored, self.restore_error = True, None

    # --- decisions ---------------------------------------------------------------------------------
    async def evaluate(self, trigger: str = "request") -> ModeDecision:
        """Decide the mode from fresh inputs now; a change is stored with its inputs and reason."""
        if not self._restored:
            await self._try_restore()
            if not self._restored:
                raise ServiceUnavailable(f"the operating-mode trail could not be read ({self.restore_error})")
        async with self._lock:
            inputs = await self._inputs()
            now = self._clock()
            decision = decide_mode(self._decided, self._since, inputs, self.config.rules, now)
            self._last, self._evaluated_at = decision, now
            self.evaluations += 1
            if decision.mode is not self._decided:
                previous = self.mode
                self._decided, self._since = decision.mode, now
                self._record(
                    "decision", previous, f"{decision.reason} [{trigger}]", inputs.as_dict(), SYSTEM_ACTOR, None, now
                )
                logger.info(
                    "operating_mode_changed",
                    extra={"from": previous.value if previous else None, "to": decision.mode.value},
                )
            if self._pending:
                await self._flush()
            return decision

    def _record(
        self,
        kind: str,
        previous: OperatingMode | None,
        reason: str,
        inputs: dict[str, Any],
        actor: str,
        trace_id: str | None,
        now: datetime,
    ) -> ModeDecisionRecord:
        mode = self.mode
        row = ModeDecisionRecord(
            account_id=self._account_id,
            decided_at=now,
            kind=kind,
            previous=previous.value if previous else None,
            mode=mode.value if mode else None,
            decided=self._decided.value if self._decided else None,
            pinned=self._pin.mode.value if self._pin else None,
            reason=reason,
            inputs=inputs,
            actor=actor,
            trace_id=trace_id,
        )
        self._pending.append(row)
        return row

    async def _flush(self) -> None:
        """Write the pending rows; a database failure keeps them for the next evaluation."""
        rows = list(self._pending)
        try:
            async with self._sessions() as session, session.begin():
                session.add_all(rows)
        except Exception as exc:
            kind = database_failure(exc)
            if kind is None:
                raise
            if self.persist_error != kind:
                logger.error("modes_persist_failed", extra={"error_class": kind})
            self.persist_error = kind
            for row in rows:  # fresh objects next time: a failed flush leaves these in an unknown state
                self._pending[self._pending.index(row)] = _copy(row)
            return
        del self._pending[: len(rows)]
        self.persist_error = None
        self._trail.extendleft(_entry(row) for row in rows)

    # --- operator pins -----------------------------------------------------------------------------
    async def pin_mode(self, mode: OperatingMode, reason: str, actor: str, trace_id: str | None) -> Pin:
        """Fix the mode until unpinned. Stored first, then applied: audited or not made."""
        pin = await self._operator("pin", mode, reason, actor, trace_id)
        assert pin is not None
        return pin

    async def unpin(self, reason: str, actor: str, trace_id: str | None) -> None:
        await self._operator("unpin", None, reason, actor, trace_id)

    async def _operator(
        self, kind: str, mode: OperatingMode | None, reason: str, actor: str, trace_id: str | None
    ) -> Pin | None:
        if not self._restored:
            await self._try_restore()
            if not self._restored:
                raise ServiceUnavailable(f"the operating-mode trail could not be read ({self.restore_error})")
        async with self._lock:
            if kind == "unpin" and self._pin is None:
                raise Conflict("no operating mode is pinned")
            if self._pending:  # earlier decisions first, in order
                await self._flush()
                if self._pending:
                    raise ServiceUnavailable(f"the operating-mode trail cannot be written ({self.persist_error})")
            now = self._clock()
            previous, old_pin = self.mode, self._pin
            self._pin = Pin(mode, reason, actor, now) if mode is not None else None
            row = self._record(kind, previous, reason, {}, actor, trace_id, now)
            try:
                async with self._sessions() as session, session.begin():
                    session.add(row)
            except BaseException:
                self._pin = old_pin
                self._pending.remove(row)
                raise
            self._pending.remove(row)
            self._trail.appendleft(_entry(row))
            logger.info("operating_mode_" + kind, extra={"mode": mode.value if mode else None, "actor": actor})
            return self._pin

    async def history(self, limit: int, offset: int) -> list[TrailEntry]:
        async with self._sessions() as session:
            return [_entry(r) for r in await repository.page(session, self._account_id, limit, offset)]


def _copy(row: ModeDecisionRecord) -> ModeDecisionRecord:
    return ModeDecisionRecord(
        account_id=row.account_id,
        decided_at=row.decided_at,
        kind=row.kind,
        previous=row.previous,
        mode=row.mode,
        decided=row.decided,
        pinned=row.pinned,
        reason=row.reason,
        inputs=row.inputs,
        actor=row.actor,
        trace_id=row.trace_id,
    )
