"""All SQL of the trading domain (accounts, trades, decisions, governor state, equity).

The command path works on plain row dicts with Core statements: a batch of trades is one
multi-row INSERT per table and one account UPDATE, with no ORM unit-of-work per row.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Column, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.policy.models import PolicyChange
from app.domains.risk.models import RiskDecisionRecord
from app.domains.safety.governor import SafetyState, TradingState
from app.domains.safety.models import SafetyStateRecord
from app.domains.trading.models import Account, EquitySnapshot, Trade

Row = dict[str, Any]

accounts = cast(Table, Account.__table__)
trades = cast(Table, Trade.__table__)
decisions = cast(Table, RiskDecisionRecord.__table__)
safety_states = cast(Table, SafetyStateRecord.__table__)
equity_snapshots = cast(Table, EquitySnapshot.__table__)
policy_changes = cast(Table, PolicyChange.__table__)

_SAFETY_FIELDS = [c.name for c in safety_states.columns if c.name != "account_id"]


class TradingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # Command path (Core) --------------------------------------------------------------

    async def lock_account(self, account_id: str, *, for_update: bool = True) -> tuple[Row | None, SafetyState | None]:
        """The account row, locked until commit (FOR UPDATE; SQLite serializes writers itself),
        with the governor's state, in one round trip."""
        statement = (
            select(accounts, *(safety_states.c[name].label(f"safety_{name}") for name in _SAFETY_FIELDS))
            .outerjoin(safety_states, safety_states.c.account_id == accounts.c.id)
            .where(accounts.c.id == account_id)
        )
        if for_update:
            statement = statement.with_for_update(of=accounts)
        row = (await self.session.execute(statement)).mappings().first()
        if row is None:
            return None, None
        account = {c.name: row[c.name] for c in accounts.columns}
        if row["safety_state"] is None:
            return account, None
        values = {name: row[f"safety_{name}"] for name in _SAFETY_FIELDS}
        values["state"] = TradingState(values["state"])
        return account, SafetyState(**values)

    async def decisions_by_client_order_id(self, ids: Sequence[str]) -> dict[str, Row]:
        if not ids:
            return {}
        rows = await self.session.execute(select(decisions).where(decisions.c.client_order_id.in_(ids)))
        return {r["client_order_id"]: dict(r) for r in rows.mappings()}

    async def trades_by_id(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Row]:
        if not ids:
            return {}
        rows = await self.session.execute(select(trades).where(trades.c.id.in_(ids)))
        return {r["id"]: dict(r) for r in rows.mappings()}

    async def write_batch(
        self,
        account: Row,
        decision_rows: list[Row],
        trade_rows: list[Row],
        snapshot_rows: list[Row],
        audit_rows: list[Row],
    ) -> None:
        """Insert the batch's rows (one executemany per table) and update the account."""
        for table, rows in (
            (decisions, decision_rows),
            (trades, trade_rows),
            (equity_snapshots, snapshot_rows),
            (policy_changes, audit_rows),
        ):
            if rows:
                await self.session.execute(insert(table), rows)
        values = {k: account[k] for k in ("equity", "open_positions", "open_notional", "used_margin", "updated_at")}
        await self.session.execute(update(accounts).where(accounts.c.id == account["id"]).values(values))

    async def insert_equity_snapshots(self, rows: list[Row]) -> None:
        if rows:
            await self.session.execute(insert(equity_snapshots), rows)

    async def close_trades(self, rows: list[Row]) -> None:
        if not rows:
            return
        fields = ["status", "exit_price", "exit_fee", "realized_pnl", "closed_at", "close_trace_id"]
        statement = (
            update(trades)
            .where(trades.c.id == bindparam("trade_id"))
            .values({name: bindparam(f"new_{name}") for name in fields})
        )
        params = [{"trade_id": r["id"], **{f"new_{name}": r[name] for name in fields}} for r in rows]
        await self.session.execute(statement, params)

    async def insert_account_if_absent(self, account: Row) -> bool:
        """Insert the account unless it exists (another worker may be starting too); True if inserted."""
        return await self._insert_if_absent(accounts, accounts.c.id, account)

    async def insert_safety_if_absent(self, account_id: str, s: SafetyState) -> bool:
        """Insert the governor's first state unless the account has one; True if inserted."""
        values = {name: getattr(s, name) for name in _SAFETY_FIELDS}
        values["state"] = s.state.value
        return await self._insert_if_absent(
            safety_states, safety_states.c.account_id, {"account_id": account_id, **values}
        )

    async def _insert_if_absent(self, table: Table, key: Column[Any], values: Row) -> bool:
        """INSERT .. ON CONFLICT DO NOTHING (Postgres, SQLite): concurrent callers never fail on the key."""
        dialect = self.session.get_bind().dialect.name
        if dialect == "postgresql":
            statement: Any = postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=[key])
        elif dialect == "sqlite":
            statement = sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=[key])
        else:  # pragma: no cover - only the two dialects above are supported
            raise NotImplementedError(f"insert-if-absent on {dialect}")
        inserted = await self.session.execute(statement.returning(key))
        return inserted.first() is not None

    async def save_safety(self, account_id: str, s: SafetyState, *, exists: bool) -> None:
        values = {name: getattr(s, name) for name in _SAFETY_FIELDS}
        values["state"] = s.state.value
        if exists:
            await self.session.execute(
                update(safety_states).where(safety_states.c.account_id == account_id).values(values)
            )
        else:
            await self.session.execute(insert(safety_states).values(account_id=account_id, **values))

    # Queries (ORM) ---------------------------------------------------------------------

    async def get_account(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def get_trade(self, trade_id: uuid.UUID) -> Trade | None:
        return await self.session.get(Trade, trade_id)

    async def list_trades(
        self, account_id: str, status: str | None, symbol: str | None, limit: int, offset: int
    ) -> tuple[list[Trade], int]:
        query = select(Trade).where(Trade.account_id == account_id)
        if status:
            query = query.where(Trade.status == status)
        if symbol:
            query = query.where(Trade.symbol == symbol)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.execute(query.order_by(Trade.opened_at.desc(), Trade.id).limit(limit).offset(offset))
        return list(rows.scalars()), int(total or 0)

    async def list_decisions(
        self, account_id: str, allowed: bool | None, limit: int, offset: int
    ) -> tuple[list[RiskDecisionRecord], int]:
        query = select(RiskDecisionRecord).where(RiskDecisionRecord.account_id == account_id)
        if allowed is not None:
            query = query.where(RiskDecisionRecord.allowed == allowed)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.execute(
            query.order_by(RiskDecisionRecord.created_at.desc()).limit(limit).offset(offset)
        )
        return list(rows.scalars()), int(total or 0)

    async def recent_realized_pnl(self, account_id: str, trades_back: int) -> Decimal:
        """Sum of the realized pnl of the last `trades_back` closed trades."""
        result = await self.session.execute(
            select(Trade.realized_pnl)
            .where(Trade.account_id == account_id, Trade.status == "CLOSED")
            .order_by(Trade.closed_at.desc())
            .limit(trades_back)
        )
        return sum((p for p in result.scalars() if p is not None), Decimal(0))

    async def open_totals(self, account_id: str) -> tuple[int, Decimal, Decimal]:
        """Open count, notional and margin summed from the trades (to audit the account row)."""
        result = await self.session.execute(
            select(Trade.notional, Trade.margin).where(Trade.account_id == account_id, Trade.status == "OPEN")
        )
        rows = list(result)
        notional = sum((n for n, _ in rows), Decimal(0))
        margin = sum((m for _, m in rows), Decimal(0))
        return len(rows), notional, margin


def equity_snapshot(account_id: str, equity: Decimal, cause: str, trade_id: uuid.UUID | None, at: datetime) -> Row:
    return {"account_id": account_id, "equity": equity, "cause": cause, "trade_id": trade_id, "created_at": at}
