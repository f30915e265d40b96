"""The position monitor: feeds every newly closed bar of the held symbols to the open positions
(fills of stops and targets, funding, liquidation, trailing stops), through the trading sequencer so
it is serialized with opens and closes under the account lock."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from app.core.db import database_failure

logger = logging.getLogger(__name__)


class PositionMonitor:
    def __init__(
        self,
        symbols: Callable[[], set[str]],
        apply_bars: Callable[[str, str], Awaitable[int]],
        interval_seconds: float,
        housekeeping: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._symbols = symbols
        self._apply = apply_bars
        self._housekeeping = housekeeping  # run first on every tick (a live exchange's reconciliation)
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.bars_applied = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="position-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def tick(self) -> int:
        """One pass over the held symbols; returns the bars applied."""
        if self._housekeeping is not None:
            await self._housekeeping()
        applied = 0
        trace_id = uuid.uuid4().hex
        for symbol in sorted(self._symbols()):
            applied += await self._apply(symbol, trace_id)
        self.ticks += 1
        self.bars_applied += applied
        return applied

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                self.last_error = None
            except Exception as exc:
                cause = database_failure(exc) or type(exc).__name__
                if cause != self.last_error:
                    logger.warning("position_monitor_failed", extra={"error_class": cause}, exc_info=exc)
                self.last_error = cause
            await asyncio.sleep(self.interval_seconds)
