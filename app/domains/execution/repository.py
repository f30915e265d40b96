"""Writes of the exchange side of a trading batch (one executemany per table) and its reads."""

import uuid
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.domains.execution.models import ExitLegRecord, ExitPlanRecord, FillRecord, Order, Position, PositionEvent
from app.domains.execution.service import ExecRows, trailing_json

positions = cast(Table, Position.__table__)
orders = cast(Table, Order.__table__)
fills = cast(Table, FillRecord.__table__)
plans = cast(Table, ExitPlanRecord.__table__)
legs = cast(Table, ExitLegRecord.__table__)
events = cast(Table, PositionEvent.__table__)

_POSITION_FIELDS = (
    "status",
    "amount",
    "margin",
    "realized_pnl",
    "fees",
    "funding",
    "stop_price",
    "liquidation_price",
    "trailing",
    "harvest",
    "last_bar_ms",
    "closed_at",
    "close_reason",
)
_ORDER_FIELDS = ("status", "filled", "average_price", "amount", "reason", "updated_at")
_LEG_FIELDS = ("status", "trigger_price", "order_client_id", "updated_at")


class ExecutionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def write(self, rows: ExecRows) -> None:
        """Insert the new rows, then update the changed ones (rows inserted in this batch are written whole)."""
        for row in (*rows.new_positions, *rows.positions.values()):
            row["trailing"] = trailing_json(row["trailing"])
            row.setdefault("harvest", None)
        for table, new in (
            (positions, rows.new_positions),
            (orders, rows.new_orders),
            (fills, rows.fills),
            (plans, rows.plans),
            (legs, rows.new_legs),
            (events, rows.events),
        ):
            if new:
                await self.session.execute(insert(table), new)
        inserted_positions = {r["id"] for r in rows.new_positions}
        inserted_legs = {r["id"] for r in rows.new_legs}
        await self._update(
            positions, "id", _POSITION_FIELDS, [r for k, r in rows.positions.items() if k not in inserted_positions]
        )
        await self._update(orders, "client_order_id", _ORDER_FIELDS, list(rows.orders.values()))
        await self._update(legs, "id", _LEG_FIELDS, [r for k, r in rows.legs.items() if k not in inserted_legs])

    async def _update(self, table: Table, key: str, names: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        statement = (
            update(table)
            .where(table.c[key] == bindparam("key_"))
            .values({name: bindparam(f"new_{name}") for name in names})
        )
        await self.session.execute(statement, [{"key_": r[key], **{f"new_{n}": r[n] for n in names}} for r in rows])

    # --- reads -------------------------------------------------------------------------------------
    async def list_positions(
        self, account_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[Position], int]:
        query = select(Position).where(Position.account_id == account_id)
        if status:
            query = query.where(Position.status == status)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        result = await self.session.execute(
            query.order_by(Position.opened_at.desc(), Position.id).limit(limit).offset(offset)
        )
        return list(result.scalars()), int(total or 0)

    async def position(self, account_id: str, position_id: uuid.UUID) -> Position | None:
        found = await self.session.get(Position, position_id)
        return found if found is not None and found.account_id == account_id else None

    async def position_of_trade(self, account_id: str, trade_id: uuid.UUID) -> Position | None:
        return (
            await self.session.execute(
                select(Position).where(Position.account_id == account_id, Position.trade_id == trade_id)
            )
        ).scalar_one_or_none()

    async def plan(self, position_id: uuid.UUID) -> tuple[ExitPlanRecord | None, list[ExitLegRecord]]:
        plan = (
            await self.session.execute(select(ExitPlanRecord).where(ExitPlanRecord.position_id == position_id))
        ).scalar_one_or_none()
        found = (
            await self.session.execute(
                select(ExitLegRecord).where(ExitLegRecord.position_id == position_id).order_by(ExitLegRecord.seq)
            )
        ).scalars()
        return plan, list(found)

    async def position_events(self, position_id: uuid.UUID) -> list[PositionEvent]:
        result = await self.session.execute(
            select(PositionEvent).where(PositionEvent.position_id == position_id).order_by(PositionEvent.id)
        )
        return list(result.scalars())

    async def fills_of(self, position_id: uuid.UUID) -> list[FillRecord]:
        result = await self.session.execute(
            select(FillRecord)
            .where(FillRecord.position_id == position_id)
            .order_by(FillRecord.filled_at, FillRecord.id)
        )
        return list(result.scalars())

    async def list_orders(
        self, account_id: str, status: str | None, position_id: uuid.UUID | None, limit: int, offset: int
    ) -> tuple[list[Order], int]:
        query = select(Order).where(Order.account_id == account_id)
        if status:
            query = query.where(Order.status == status)
        if position_id is not None:
            query = query.where(Order.position_id == position_id)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        result = await self.session.execute(
            query.order_by(Order.created_at.desc(), Order.client_order_id).limit(limit).offset(offset)
        )
        return list(result.scalars()), int(total or 0)
