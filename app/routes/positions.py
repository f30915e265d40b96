"""/positions, /orders and /api/v2/market/prices: positions managed by their exit plans, the orders
the exchange holds, and the feed's prices."""

import uuid
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.bootstrap import Container
from app.core.context import current_trace_id
from app.domains.execution.feed import NoPrice
from app.domains.execution.models import Position
from app.domains.execution.schemas import (
    ClosePositionBody,
    ExitPlanOut,
    FillOut,
    MarketPriceOut,
    MarketPricesOut,
    MissingPriceOut,
    OrderOut,
    OrderPage,
    PositionDetailOut,
    PositionEventOut,
    PositionOut,
    PositionPage,
)
from app.routes.deps import AuthorizedContainer, ContainerDep, Limit, Offset

router = APIRouter(tags=["positions"])


def _out(container: Container, position: Position) -> PositionOut:
    out = PositionOut.model_validate(position)
    mark = container.trading.execution.marks.get(position.symbol)
    if mark is not None and position.status == "OPEN":
        sign = 1 if position.side == "LONG" else -1
        out.mark_price, out.unrealized_pnl = mark, sign * position.amount * (mark - position.entry_price)
    return out


@router.get("/positions", response_model=PositionPage)
async def list_positions(
    container: ContainerDep,
    status: Annotated[Literal["OPEN", "CLOSED", "LIQUIDATED"] | None, Query()] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> PositionPage:
    """Positions, newest first: each opened by a trade, managed by its exit plan."""
    items, total = await container.trading.positions(status, limit, offset)
    return PositionPage(items=[_out(container, p) for p in items], total=total, limit=limit, offset=offset)


@router.get("/positions/{position_id}", response_model=PositionDetailOut)
async def get_position(position_id: uuid.UUID, container: ContainerDep) -> PositionDetailOut:
    """A position with its fills (realized PnL per fill) and events (funding, arbiter actions with their source)."""
    position, fills, events = await container.trading.position_detail(position_id)
    return PositionDetailOut(
        **_out(container, position).model_dump(),
        fills=[FillOut.model_validate(f) for f in fills],
        events=[PositionEventOut.model_validate(e) for e in events],
    )


@router.get("/positions/{position_id}/exit-plan", response_model=ExitPlanOut)
async def get_exit_plan(position_id: uuid.UUID, container: ContainerDep) -> ExitPlanOut:
    """The exit plan: its legs (take-profits, stop, trailing) with their state, the liquidation bound, notes."""
    position, plan, legs = await container.trading.exit_plan(position_id)
    return ExitPlanOut.of(position, plan, legs)


@router.post("/positions/{position_id}/close", response_model=PositionOut)
async def close_position(
    position_id: uuid.UUID, body: ClosePositionBody, container: AuthorizedContainer
) -> PositionOut:
    """Close all of the position, or `amount` contracts, at the market through the exit arbiter (an
    operator's close). With `price`, a market further than MAX_PRICE_DEVIATION_PCT is refused (409)."""
    position = await container.trading.close_position(
        position_id, body.price, current_trace_id(), amount=body.amount, reason=body.reason
    )
    return _out(container, position)


@router.get("/orders", response_model=OrderPage)
async def list_orders(
    container: ContainerDep,
    status: Annotated[Literal["NEW", "FILLED", "CANCELED", "EXPIRED", "REJECTED"] | None, Query()] = None,
    position_id: Annotated[uuid.UUID | None, Query()] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> OrderPage:
    """Orders, newest first: entries, the exit plans' protective orders (reduce-only) and closes."""
    items, total = await container.trading.orders(status, position_id, limit, offset)
    return OrderPage(items=[OrderOut.model_validate(o) for o in items], total=total, limit=limit, offset=offset)


@router.get("/api/v2/market/prices", response_model=MarketPricesOut)
async def market_prices(container: ContainerDep) -> MarketPricesOut:
    """The feed's current price of every tradable symbol (the mark positions are valued at)."""
    execution = container.trading.execution
    prices, missing = [], []
    for symbol in container.markets.symbols():
        try:
            price: Decimal = await execution.refresh_mark(symbol)
        except NoPrice as exc:
            missing.append(MissingPriceOut(symbol=symbol, reason=str(exc)))
            continue
        prices.append(MarketPriceOut(symbol=symbol, price=price))
    return MarketPricesOut(feed=execution.feed.name, now=execution.feed.now(), prices=prices, missing=missing)
