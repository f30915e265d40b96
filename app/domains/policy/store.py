"""PolicyStore v2: a cached copy of the policy state, refreshed on change, durable in the database.

A risk check reads `snapshot` (a plain attribute, no I/O). The copy follows the backend
through pub/sub notifications plus a version poll, so a change made by any worker is
in force everywhere within milliseconds. When the backend is unreachable the last known
state keeps serving (NORMAL if none was ever read), `degraded` says so, and writes are
refused until it returns; recovery needs no restart.

A change is made in one database transaction: lock the durable row, apply the change, write
the row and its audit row, put the new state on the backend, commit. So a change is audited
or not made. On start the durable row is restored onto the backend (an empty Redis, the
in-process backend); if it cannot be read, the store serves with new positions disabled and
keeps trying, rather than starting from defaults.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from app.core.errors import Conflict, ServiceUnavailable
from app.core.metrics import POLICY_BACKEND_UP
from app.domains.policy.backends import PolicyBackend, PolicyBackendError
from app.domains.policy.durable import DurablePolicyState, DurableStateError
from app.domains.policy.models import PolicyChange
from app.domains.policy.profiles import RiskMode
from app.domains.policy.state import PolicySnapshot, PolicyState

logger = logging.getLogger(__name__)

Mutation = Callable[[PolicyState], PolicyState]
AuditRecord = Callable[[PolicyState, PolicyState], PolicyChange]


class PolicyStore:
    def __init__(
        self,
        backend: PolicyBackend,
        durable: DurablePolicyState,
        initial_mode: RiskMode = RiskMode.NORMAL,
        poll_interval: float = 1.0,
    ) -> None:
        self.backend = backend
        self.durable = durable
        self._initial_mode = initial_mode
        self._poll_interval = poll_interval
        self.restore_error: str | None = "not started"
        self.snapshot = PolicySnapshot.of(PolicyState(mode=RiskMode.NORMAL), self.restore_error)
        self.ever_synced = False
        self.degraded = True
        self.last_error: str | None = "not started"
        self.last_sync_monotonic: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.restore()
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

    async def restore(self) -> bool:
        """Make the backend serve the durable state; False (new positions disabled) if it cannot be read.

        Runs under the durable row's lock, so it never races a change being committed. If the
        backend holds a state the database does not (a change whose commit failed: never audited),
        the durable state wins.
        """
        async with self._write_lock:
            stored: PolicyState | None = None
            try:
                async with self.durable.transaction() as tx:
                    stored = await tx.lock_or_seed(await self._first_state())
                    live = await self.backend.load()
                    if live is None:
                        live = await self.backend.initialize(stored)
                    elif live.to_json() != stored.to_json():
                        version = stored.version if stored.version > live.version else live.version + 1
                        logger.warning(
                            "policy_backend_differs_from_durable_state",
                            extra={"durable_version": stored.version, "backend_version": live.version},
                        )
                        await self.backend.put(stored.with_version(version))
                        live = stored.with_version(version)
            except PolicyBackendError as exc:
                # The durable state is known: serve it while the backend is away.
                self._mark_down(str(exc))
                if stored is not None:
                    self._restored(stored)
                    return True
                self._restore_failed(f"policy backend {self.backend.name} is unreachable")
            except DurableStateError as exc:
                self._restore_failed(str(exc))
            except Exception as exc:  # noqa: BLE001 - a database failure of any kind: not restored
                self._restore_failed(f"the database could not be read ({type(exc).__name__})")
            else:
                self._restored(live)
                self._mark_up()
                return True
        with contextlib.suppress(PolicyBackendError):
            await self.refresh()
        return False

    async def _first_state(self) -> Callable[[], PolicyState]:
        """What to store when no durable copy exists yet: the backend's state, else the audit
        trail replayed (a deployment from before the durable copy), else the configured mode."""
        try:
            live = await self.backend.load()
        except PolicyBackendError as exc:
            raise DurableStateError(
                f"no durable policy state yet and the policy backend {self.backend.name} is unreachable"
            ) from exc
        if live is not None:
            return lambda: live
        rebuilt = await self.durable.rebuild_from_history(self._initial_mode)
        if rebuilt is not None:
            logger.warning("policy_state_rebuilt_from_history", extra={"mode": rebuilt.mode.value})
            return lambda: rebuilt.with_version(1)
        return lambda: PolicyState(mode=self._initial_mode, version=1)

    async def refresh(self) -> PolicySnapshot:
        """Read the backend's state into the cache; re-seed it from the durable copy if it lost it."""
        try:
            state = await self.backend.load()
            if state is None:
                state = await self.backend.initialize(await self._reseed_state())
        except PolicyBackendError as exc:
            self._mark_down(str(exc))
            raise
        self._apply(state)
        self._mark_up()
        return self.snapshot

    async def _reseed_state(self) -> PolicyState:
        try:
            stored = await self.durable.load()
        except DurableStateError:
            stored = None
        if stored is not None:
            return stored
        return self.snapshot.state if self.ever_synced else PolicyState(mode=self._initial_mode, version=1)

    async def update(self, mutate: Mutation, audit: AuditRecord) -> tuple[PolicyState, PolicyState]:
        """Apply `mutate` and audit it in one transaction; in force in this process before returning.

        Writers of every process take turns on the durable row's lock. Errors of `mutate` (4xx)
        and of the database leave nothing changed; an unreachable backend is a 503.
        """
        async with self._write_lock:
            put_done = False
            current: PolicyState | None = None
            try:
                async with self.durable.transaction() as tx:
                    try:
                        stored = await tx.lock()
                    except DurableStateError as exc:
                        logger.warning("policy_durable_state_replaced", extra={"error": str(exc)})
                        stored = None
                    live = await self.backend.load()
                    current = stored or live or self.snapshot.state
                    proposed = mutate(current)
                    version = max(current.version, live.version if live else 0) + 1
                    applied = proposed.with_version(version)
                    await tx.save(applied, audit(current, applied))
                    in_force = await self.backend.put(applied)
                    put_done = True
                    if in_force != version:
                        raise Conflict("policy state changed outside the durable lock; retry")
            except PolicyBackendError as exc:
                self._mark_down(str(exc))
                raise ServiceUnavailable(
                    f"policy backend {self.backend.name} is unreachable; nothing was changed"
                ) from exc
            except BaseException:
                if put_done and current is not None:
                    await self._undo(current, version)
                raise
            self._restored(applied)
            self._mark_up()
            return current, applied

    async def _undo(self, before: PolicyState, version: int) -> None:
        """The commit failed after the backend took the change: put the audited state back."""
        logger.error("policy_commit_failed_undoing", extra={"version": version})
        try:
            await self.backend.put(replace(before, version=version + 1))
            self._apply(replace(before, version=version + 1))
        except PolicyBackendError as exc:
            self._mark_down(str(exc))

    def _restored(self, state: PolicyState) -> None:
        if self.restore_error is not None and self.restore_error != "not started":
            logger.info("policy_state_restored", extra={"version": state.version})
        self.restore_error = None
        self._apply(state, force=True)

    def _restore_failed(self, error: str) -> None:
        if error != self.restore_error:  # once per cause, not on every retry
            logger.error("policy_state_not_restored_new_positions_disabled", extra={"error": error})
        self.restore_error = error
        self._apply(self.snapshot.state, force=True)

    def _apply(self, state: PolicyState, force: bool = False) -> None:
        if force or state != self.snapshot.state or not self.ever_synced:
            self.snapshot = PolicySnapshot.of(state, self.restore_error)
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
            if self.restore_error is not None:
                await self.restore()
                continue
            with contextlib.suppress(PolicyBackendError):
                await self.refresh()
