"""All SQL of the trading domain (accounts, trades, decisions, governor state, equity)."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.risk.models import RiskDecisionRecord
from app.domains.safety.governor import SafetyState, TradingState
from app.domains.safety.models import SafetyStateRecord
from app.domains.trading.models import Account, EquitySnapshot, Trade


class TradingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_account(self, account_id: str) -> Account | None:
        """The account row, locked until commit (FOR UPDATE; SQLite serializes writers itself)."""
        result = await self.session.execute(
            select(Account).where(Account.id == account_id).with_for_update().execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def get_account(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def decisions_by_client_order_id(self, ids: Sequence[str]) -> dict[str, RiskDecisionRecord]:
        if not ids:
            return {}
        rows = await self.session.execute(select(RiskDecisionRecord).where(RiskDecisionRecord.client_order_id.in_(ids)))
        return {r.client_order_id: r for r in rows.scalars() if r.client_order_id is not None}

    async def trades_by_id(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Trade]:
        if not ids:
            return {}
        rows = await self.session.execute(select(Trade).where(Trade.id.in_(ids)))
        return {t.id: t for t in rows.scalars()}

    async def get_trade(self, trade_id: uuid.UUID) -> Trade | None:
        return await self.session.get(Trade, trade_id)

    async def get_decision(self, decision_id: uuid.UUID) -> RiskDecisionRecord | None:
        return await self.session.get(RiskDecisionRecord, decision_id)

    async def list_trades(
        self,
        account_id: str,
        status: str | None,
        symbol: str | None,
        limit: int,
        offset: int,
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

    async def open_totals(self, account_id: str) -> tuple[int, Decimal, Decimal]:
        """Open count, notional and margin summed from the trades (to audit the account row)."""
        trades = await self.session.execute(
            select(Trade.notional, Trade.margin).where(Trade.account_id == account_id, Trade.status == "OPEN")
        )
        rows = list(trades)
        notional = sum((n for n, _ in rows), Decimal(0))
        margin = sum((m for _, m in rows), Decimal(0))
        return len(rows), notional, margin

    def add(self, *rows: object) -> None:
        self.session.add_all(rows)

    async def load_safety(self, account_id: str) -> SafetyState | None:
        row = await self.session.get(SafetyStateRecord, account_id, populate_existing=True)
        if row is None:
            return None
        return SafetyState(
            state=TradingState(row.state),
            reason=row.reason,
            emergency=row.emergency,
            halted_until=row.halted_until,
            peak_equity=row.peak_equity,
            day=row.day,
            day_start_equity=row.day_start_equity,
            losing_streak=row.losing_streak,
            winning_streak=row.winning_streak,
            leverage_multiplier=row.leverage_multiplier,
            updated_at=row.updated_at,
            emergency_reset_equity=row.emergency_reset_equity,
        )

    async def save_safety(self, account_id: str, s: SafetyState) -> None:
        row = await self.session.get(SafetyStateRecord, account_id)
        values = {
            "state": s.state.value,
            "reason": s.reason,
            "emergency": s.emergency,
            "halted_until": s.halted_until,
            "peak_equity": s.peak_equity,
            "day": s.day,
            "day_start_equity": s.day_start_equity,
            "losing_streak": s.losing_streak,
            "winning_streak": s.winning_streak,
            "leverage_multiplier": s.leverage_multiplier,
            "emergency_reset_equity": s.emergency_reset_equity,
            "updated_at": s.updated_at,
        }
        if row is None:
            self.session.add(SafetyStateRecord(account_id=account_id, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)

    def add_equity_snapshot(
        self,
        account_id: str,
        equity: Decimal,
        cause: str,
        trade_id: uuid.UUID | None,
        at: datetime,
    ) -> None:
        self.session.add(
            EquitySnapshot(
                account_id=account_id,
                equity=equity,
                cause=cause,
                trade_id=trade_id,
                created_at=at,
            )
        )
