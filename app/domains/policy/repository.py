"""SQL of the policy audit trail and of the durable copy of the policy state."""

from datetime import datetime
from typing import cast

from sqlalchemy import Executable, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.policy.models import PolicyChange, PolicyStateRecord

STATE_ROW_ID = "current"
_state = cast(Table, PolicyStateRecord.__table__)


class PolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, change: PolicyChange) -> None:
        self.session.add(change)

    async def history(self, limit: int, offset: int, kind: str | None = None) -> tuple[list[PolicyChange], int]:
        query = select(PolicyChange)
        if kind:
            query = query.where(PolicyChange.kind == kind)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.execute(
            query.order_by(PolicyChange.created_at.desc(), PolicyChange.id.desc()).limit(limit).offset(offset)
        )
        return list(rows.scalars()), int(total or 0)

    async def changes_in_order(self) -> list[PolicyChange]:
        """The whole audit trail, oldest first (to rebuild a state that predates the durable copy)."""
        rows = await self.session.execute(select(PolicyChange).order_by(PolicyChange.id))
        return list(rows.scalars())

    # Durable state -------------------------------------------------------------------

    async def load_state(self) -> tuple[str, int] | None:
        """The stored state document and its version, or None if none was ever stored."""
        row = (
            await self.session.execute(select(_state.c.state, _state.c.version).where(_state.c.id == STATE_ROW_ID))
        ).first()
        return None if row is None else (row[0], int(row[1]))

    async def lock_state(self) -> tuple[str, int] | None:
        """Like `load_state`, but the row stays locked until commit.

        The lock is taken by writing the row first (a no-op UPDATE): a row lock on Postgres and the
        database write lock on SQLite, whose deferred transactions would otherwise read before
        locking and let two writers base their change on the same state.
        """
        result = await self.session.execute(
            update(_state).where(_state.c.id == STATE_ROW_ID).values(version=_state.c.version)
        )
        if getattr(result, "rowcount", 0) == 0:
            return None
        return await self.load_state()

    async def insert_state_if_absent(self, document: str, version: int, at: datetime) -> bool:
        """Store the first durable copy unless another process stored one first; True if inserted."""
        dialect = self.session.get_bind().dialect.name
        values = {"id": STATE_ROW_ID, "state": document, "version": version, "updated_at": at}
        statement: Executable
        if dialect == "postgresql":
            statement = postgresql.insert(_state).values(values).on_conflict_do_nothing(index_elements=["id"])
        elif dialect == "sqlite":
            statement = sqlite.insert(_state).values(values).on_conflict_do_nothing(index_elements=["id"])
        else:  # pragma: no cover - only the two dialects above are supported
            statement = insert(_state).values(values)
        result = await self.session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    async def save_state(self, document: str, version: int, at: datetime) -> None:
        await self.session.execute(
            update(_state).where(_state.c.id == STATE_ROW_ID).values(state=document, version=version, updated_at=at)
        )
