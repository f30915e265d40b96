"""The durable copy of the policy state, in the database beside the audit trail.

Redis keeps nothing on disk here, and the in-process backend lives and dies with its worker;
the database row is what survives. Every change writes it in the transaction that writes its
audit row, so the history and the state never disagree, and a restart restores it.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domains.policy.models import PolicyChange
from app.domains.policy.profiles import RiskMode
from app.domains.policy.repository import PolicyRepository
from app.domains.policy.state import PolicyState, replay


class DurableStateError(Exception):
    """The durable copy could not be read: the database failed, or the stored document is unreadable."""


def _parse(row: tuple[str, int] | None) -> PolicyState | None:
    if row is None:
        return None
    try:
        return PolicyState.from_json(row[0], row[1])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DurableStateError(f"the stored policy state is unreadable ({type(exc).__name__}: {exc})"[:300]) from exc


class LockedPolicyState:
    """The durable row inside one transaction, locked until it commits."""

    def __init__(self, repo: PolicyRepository, clock: Callable[[], datetime]) -> None:
        self._repo = repo
        self._clock = clock
        self._exists = False

    async def lock(self) -> PolicyState | None:
        """The stored state (None if none yet); raises DurableStateError if it is unreadable.

        The row is locked even when its document is unreadable, so an operator's write can replace it.
        """
        row = await self._repo.lock_state()
        self._exists = row is not None
        return _parse(row)

    async def lock_or_seed(self, seed: Callable[[], PolicyState]) -> PolicyState:
        """The stored state, storing `seed()` first if no state was ever stored (insert-if-absent)."""
        state = await self.lock()
        if self._exists:
            assert state is not None
            return state
        first = seed()
        await self._repo.insert_state_if_absent(first.to_json(), first.version, self._clock())
        state = await self.lock()
        assert state is not None
        return state

    async def save(self, state: PolicyState, audit: PolicyChange | None = None) -> None:
        """Write `state` (and its audit row) in this transaction; flushed, so a bad row fails here."""
        if self._exists:
            await self._repo.save_state(state.to_json(), state.version, self._clock())
        else:
            await self._repo.insert_state_if_absent(state.to_json(), state.version, self._clock())
            self._exists = True
        if audit is not None:
            self._repo.add(audit)
        await self._repo.session.flush()


class DurablePolicyState:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._clock = clock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[LockedPolicyState]:
        """One transaction on the durable row; commits on exit, rolls back on an exception."""
        async with self._sessions() as session, session.begin():
            yield LockedPolicyState(PolicyRepository(session), self._clock)

    async def load(self) -> PolicyState | None:
        """The stored state without locking it (None if none yet)."""
        try:
            async with self._sessions() as session:
                row = await PolicyRepository(session).load_state()
        except Exception as exc:  # any failure means: not restored
            raise DurableStateError(f"the database could not be read ({type(exc).__name__})") from exc
        return _parse(row)

    async def rebuild_from_history(self, initial_mode: RiskMode) -> PolicyState | None:
        """The state the audit trail leads to, for a deployment whose changes predate the durable copy."""
        async with self._sessions() as session:
            changes = await PolicyRepository(session).changes_in_order()
        return replay(((c.kind, c.to_value, c.reason) for c in changes), initial_mode)
