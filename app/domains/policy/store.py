"""PolicyStore v2: a cached copy of the policy state, refreshed on change.

A risk check reads `snapshot` (a plain attribute, no I/O). The copy follows the backend
through pub/sub notifications plus a version poll, so a change made by any worker is
in force everywhere within milliseconds. When the backend is unreachable the last known
state keeps serving (NORMAL if none was ever read), `degraded` says so, and writes are
refused until it returns; recovery needs no restart.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from app.core.errors import Conflict, ServiceUnavailable
from app.core.metrics import POLICY_BACKEND_UP
from app.domains.policy.backends import PolicyBackend, PolicyBackendError
from app.domains.policy.profiles import RiskMode
from app.domains.policy.state import PolicySnapshot, PolicyState

logger = logging.getLogger(__name__)

Mutation = Callable[[PolicyState], PolicyState]


class PolicyStore:
    def __init__(
        self,
        backend: PolicyBackend,
        initial_mode: RiskMode = RiskMode.NORMAL,
        poll_interval: float = 1.0,
    ) -> None:
        self.backend = backend
        self._initial_mode = initial_mode
        self._poll_interval = poll_interval
        self.snapshot = PolicySnapshot.of(PolicyState(mode=RiskMode.NORMAL))
        self.ever_synced = False
        self.degraded = True
        self.last_error: str | None = "not started"
        self.last_sync_monotonic: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self.refresh()
        except PolicyBackendError:
            logger.warning("policy_store_started_degraded", extra={"error": self.last_error})
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="policy-listen"),
            asyncio.create_task(self._poll_forever(), name="policy-poll"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.backend.close()

    async def refresh(self) -> PolicySnapshot:
        """Read the backend's state into the cache; re-seed it if the backend lost it."""
        try:
            state = await self.backend.load()
            if state is None:
                seed = self.snapshot.state if self.ever_synced else PolicyState(mode=self._initial_mode)
                state = await self.backend.initialize(seed)
        except PolicyBackendError as exc:
            self._mark_down(str(exc))
            raise
        self._apply(state)
        self._mark_up()
        return self.snapshot

    async def update(self, mutate: Mutation) -> tuple[PolicyState, PolicyState]:
        """Apply `mutate` with compare-and-set; in force in this process before returning.

        Writers of this process take turns; writers of other processes retry with jitter.
        """
        async with self._write_lock:
            for attempt in range(40):
                try:
                    current = await self.backend.load()
                    if current is None:
                        current = await self.backend.initialize(self.snapshot.state)
                    proposed = mutate(current)
                    version = await self.backend.compare_and_set(current.version, proposed)
                except PolicyBackendError as exc:
                    self._mark_down(str(exc))
                    raise ServiceUnavailable(
                        f"policy backend {self.backend.name} is unreachable; nothing was changed"
                    ) from exc
                if version is not None:
                    applied = proposed.with_version(version)
                    self._apply(applied)
                    self._mark_up()
                    return current, applied
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise Conflict("policy state changed concurrently too often; retry")

    def _apply(self, state: PolicyState) -> None:
        if state != self.snapshot.state or not self.ever_synced:
            self.snapshot = PolicySnapshot.of(state)
        self.ever_synced = True

    def _mark_up(self) -> None:
        if self.degraded:
            logger.info("policy_backend_up", extra={"backend": self.backend.name})
        self.degraded = False
        self.last_error = None
        self.last_sync_monotonic = time.monotonic()
        POLICY_BACKEND_UP.set(1)

    def _mark_down(self, error: str) -> None:
        if not self.degraded:
            logger.error(
                "policy_backend_down",
                extra={"backend": self.backend.name, "error": error},
            )
        self.degraded = True
        self.last_error = error
        POLICY_BACKEND_UP.set(0)

    async def _on_change(self, version: int) -> None:
        if version != self.snapshot.state.version:
            with contextlib.suppress(PolicyBackendError):
                await self.refresh()

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self.backend.listen(self._on_change)
            except PolicyBackendError as exc:
                self._mark_down(str(exc))
            await asyncio.sleep(self._poll_interval)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            with contextlib.suppress(PolicyBackendError):
                await self.refresh()
