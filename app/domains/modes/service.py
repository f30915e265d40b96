"""OperatingModes: the mode in force, shared by every process through the stored trail.

The trail (`mode_decisions`) is the truth and each process's state a cache of its newest row:
every process reads the newest row every `poll_seconds` (1 s) and adopts it, so a pin made through
any worker applies in all of them within that time. One process decides (the leader, `Leadership`):
on a timer, on a closed trade and on request. A row is written under the account row's lock from
the newest row read under that lock, so a pin and a decision written at the same time never lose
each other. A pin or unpin is stored first and applied once stored: audited or not made. A decision
that cannot be stored (the database is down) applies in this process only if it tightens, and is
decided again from the stored state once the database answers. Until the trail has been read the
mode layer allows no new position (`NOT_RESTORED`), so a restart never loosens.
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
from app.core.lease import Leadership
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
    interval_seconds: float = 30.0  # between decisions of the leader
    poll_seconds: float = 1.0  # between reads of the newest stored row (every process)
    keep_decisions: int = 20


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
        leadership: Leadership | None = None,
    ) -> None:
        self._sessions = sessions
        self._account_id = account_id
        self.config = config
        self._clock = clock
        self._inputs = inputs
        self.leadership = leadership or Leadership(None, "")
        self._lock = asyncio.Lock()
        self._restored = False
        self.restore_error: str | None = None
        self.persist_error: str | None = None
        self._seen_id = 0  # id of the newest stored row adopted
        self._decided: OperatingMode | None = None
        self._since: datetime | None = None
        self._pin: Pin | None = None
        self._last: ModeDecision | None = None
        self._evaluated_at: datetime | None = None
        self._unstored: TrailEntry | None = None  # a tightening applied here that could not be stored
        self._trail: deque[TrailEntry] = deque(maxlen=config.keep_decisions)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._next_decision = 0.0  # loop time of the leader's next decision
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
        """This process's last evaluation (None in a process that does not decide)."""
        return self._last

    @property
    def evaluated_at(self) -> datetime | None:
        return self._evaluated_at

    def trail(self) -> list[TrailEntry]:
        """The last changes, pins and unpins, newest first; a decision applied here but not stored
        yet comes first, without an id."""
        return ([self._unstored] if self._unstored else []) + list(self._trail)

    def limit_layer(self) -> LayerLimits:
        """The mode in force as a layer of RiskGuard's limit stack (no I/O: read under the account lock)."""
        if not self._restored:
            return NOT_RESTORED
        mode = self.mode
        return UNDECIDED if mode is None else mode_layer(mode)

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the trail (a database that is down is retried every poll), then follow it and, as the
        leader, decide on the timer; the leader's first decision is taken at once."""
        await self.sync()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="operating-modes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing: str | None = None
        while True:
            try:
                await self.sync()
                if self._restored and self.leadership.is_leader and loop.time() >= self._next_decision:
                    await self.evaluate("timer" if self.evaluations else "start")
                failing = None
            except Exception as exc:
                cause = database_failure(exc) or type(exc).__name__
                if cause != failing:
                    logger.warning("modes_cycle_failed", extra={"error_class": cause}, exc_info=exc)
                failing = cause
            self._wake.clear()
            try:
                async with asyncio.timeout(self.config.poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def on_trade_closed(self, _: Event) -> None:
        """A closed trade changes the win rate, the drawdown and the risk score: decide again now."""
        self._next_decision = 0.0
        self._wake.set()

    # --- following the trail -------------------------------------------------------------------------
    async def sync(self) -> None:
        """Adopt the newest stored row if it is newer than the one adopted; a database that does not
        answer is recorded (`restore_error` until the first read) and retried on the next poll."""
        try:
            async with self._sessions() as session:
                if not self._restored:
                    rows = await repository.recent(session, self._account_id, self.config.keep_decisions)
                    if rows and rows[0].pinned is not None and not any(r.kind == "pin" for r in rows):
                        pin_row = await repository.newest_pin(session, self._account_id)
                        rows += [pin_row] if pin_row is not None else []  # for the pin's author and reason
                else:
                    newest = await repository.newest(session, self._account_id)
                    rows = [newest] if newest is not None and newest.id > self._seen_id else []
                    if (
                        rows
                        and newest is not None
                        and newest.kind != "pin"
                        and newest.pinned is not None
                        and (self._pin is None or self._pin.mode.value != newest.pinned)
                    ):  # a pin made between two polls: its author and reason are on its own row
                        pin_row = await repository.newest_pin(session, self._account_id)
                        rows += [pin_row] if pin_row is not None else []
        except Exception as exc:
            kind = database_failure(exc)
            if kind is None:
                raise
            if not self._restored and self.restore_error != kind:
                logger.error("modes_restore_waiting_for_database", extra={"error_class": kind})
            if not self._restored:
                self.restore_error = kind
            return
        if rows:
            self._adopt(rows[0], rows)
            known = {e.id for e in self._trail}
            self._trail.extendleft(_entry(r) for r in reversed(rows) if r.id not in known)
        if not self._restored:
            self._restored, self.restore_error = True, None
            logger.info("modes_restored", extra={"mode": self.mode.value if self.mode else None})

    def _adopt(
        self, row: ModeDecisionRecord, history: list[ModeDecisionRecord] | None = None, *, force: bool = False
    ) -> None:
        """The stored state of `row` becomes the state here. A local decision that tightened but could
        not be stored is kept while the stored one is looser. `history` (newest first, on restore)
        supplies the time of the last decision and the pin's own row."""
        if row.id <= self._seen_id and not force:
            return
        if force:
            self._unstored = None
        self._seen_id = row.id
        stored = _mode(row.decided)
        local_stricter = (
            self._unstored is not None
            and self._decided is not None
            and (stored is None or self._decided.rank > stored.rank)
        )
        if not local_stricter:
            self._unstored = None
            if row.kind == "decision" or self._since is None or stored is not self._decided:
                decisions = [r for r in history or [row] if r.kind == "decision"]
                self._since = decisions[0].decided_at if decisions else row.decided_at
            self._decided = stored
        pinned = _mode(row.pinned)
        if pinned is None:
            self._pin = None
        elif row.kind == "pin" or self._pin is None or self._pin.mode is not pinned:
            source = next((r for r in history or [row] if r.kind == "pin"), row)
            self._pin = Pin(pinned, source.reason, source.actor, source.decided_at)

    # --- decisions ---------------------------------------------------------------------------------
    async def evaluate(self, trigger: str = "request") -> ModeDecision:
        """Decide the mode from fresh inputs now; a change is stored with its inputs and reason."""
        if not self._restored:
            await self.sync()
            if not self._restored:
                raise ServiceUnavailable(f"the operating-mode trail could not be read ({self.restore_error})")
        async with self._lock:
            # Set before reading the inputs: a trade closing meanwhile resets it and is decided on at once.
            self._next_decision = asyncio.get_running_loop().time() + self.config.interval_seconds
            inputs = await self._inputs()
            self.evaluations += 1
            try:
                async with self._sessions() as session, session.begin():
                    await repository.lock_account(session, self._account_id)
                    newest = await repository.newest(session, self._account_id)
                    if newest is not None:
                        # A decision applied here but not stored is decided again from the stored state.
                        self._adopt(newest, force=self._unstored is not None)
                    elif self._unstored is not None:
                        self._decided = self._since = self._unstored = None
                    now = self._clock()
                    decision = decide_mode(self._decided, self._since, inputs, self.config.rules, now)
                    row = None
                    if decision.mode is not self._decided:
                        row = self._row("decision", decision, f"{decision.reason} [{trigger}]", inputs, now)
                        session.add(row)
                        await session.flush()
            except Exception as exc:
                kind = database_failure(exc)
                if kind is None:
                    raise
                return self._decided_without_database(inputs, trigger, kind)
            self._last, self._evaluated_at = decision, now
            self.persist_error = None
            if row is not None:
                self._unstored = None
                self._adopt(row)
                self._trail.appendleft(_entry(row))
                logger.info("operating_mode_changed", extra={"to": decision.mode.value, "reason": decision.reason})
            return decision

    def _decided_without_database(self, inputs: ModeInputs, trigger: str, kind: str) -> ModeDecision:
        """The database did not answer: decide from this process's state; apply only a tightening."""
        now = self._clock()
        decision = decide_mode(self._decided, self._since, inputs, self.config.rules, now)
        self._last, self._evaluated_at = decision, now
        if self.persist_error != kind:
            logger.error("modes_persist_failed", extra={"error_class": kind})
        self.persist_error = kind
        if self._decided is None or decision.mode.rank > self._decided.rank:
            row = self._row("decision", decision, f"{decision.reason} [{trigger}; not stored: {kind}]", inputs, now)
            self._decided, self._since = decision.mode, now
            self._unstored = _entry(row)
            logger.info("operating_mode_changed_unstored", extra={"to": decision.mode.value})
        return decision

    def _row(
        self, kind: str, decision: ModeDecision, reason: str, inputs: ModeInputs, now: datetime
    ) -> ModeDecisionRecord:
        mode = self._pin.mode if self._pin is not None else decision.mode
        previous = self.mode
        return ModeDecisionRecord(
            account_id=self._account_id,
            decided_at=now,
            kind=kind,
            previous=previous.value if previous else None,
            mode=mode.value,
            decided=decision.mode.value,
            pinned=self._pin.mode.value if self._pin else None,
            reason=reason,
            inputs=inputs.as_dict(),
            actor=SYSTEM_ACTOR,
            trace_id=None,
        )

    # --- operator pins -----------------------------------------------------------------------------
    async def pin_mode(self, mode: OperatingMode, reason: str, actor: str, trace_id: str | None) -> Pin:
        """Hold `mode` until unpinned, in every process. Stored first, then applied: audited or not made."""
        await self._operator("pin", mode, reason, actor, trace_id)
        assert self._pin is not None
        return self._pin

    async def unpin(self, reason: str, actor: str, trace_id: str | None) -> None:
        await self._operator("unpin", None, reason, actor, trace_id)

    async def _operator(
        self, kind: str, mode: OperatingMode | None, reason: str, actor: str, trace_id: str | None
    ) -> None:
        if not self._restored:
            await self.sync()
            if not self._restored:
                raise ServiceUnavailable(f"the operating-mode trail could not be read ({self.restore_error})")
        async with self._lock, self._sessions() as session, session.begin():
            await repository.lock_account(session, self._account_id)
            newest = await repository.newest(session, self._account_id)
            if newest is not None:
                self._adopt(newest)
            if kind == "unpin" and self._pin is None:
                raise Conflict("no operating mode is pinned")
            decided = newest.decided if newest is not None else None
            in_force = mode.value if mode is not None else decided
            row = ModeDecisionRecord(
                account_id=self._account_id,
                decided_at=self._clock(),
                kind=kind,
                previous=self.mode.value if self.mode else None,
                mode=in_force,
                decided=decided,
                pinned=mode.value if mode is not None else None,
                reason=reason,
                inputs={},
                actor=actor,
                trace_id=trace_id,
            )
            session.add(row)
            await session.flush()
        self._adopt(row)
        self._trail.appendleft(_entry(row))
        logger.info("operating_mode_" + kind, extra={"mode": mode.value if mode else None, "actor": actor})

    async def history(self, limit: int, offset: int) -> list[TrailEntry]:
        async with self._sessions() as session:
            return [_entry(r) for r in await repository.page(session, self._account_id, limit, offset)]
