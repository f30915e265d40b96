"""/trades: open (through RiskGuard), list, read, close."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.core.context import current_trace_id
from app.core.validation import SymbolText
from app.domains.execution.schemas import ExitPlanOut, OrderOut, PositionOut
from app.domains.trading.schemas import (
    DecisionOut,
    RiskDeniedOut,
    TradeClose,
    TradeCreate,
    TradeOpenedOut,
    TradeOut,
    TradePage,
)
from app.routes.deps import AuthorizedContainer, ContainerDep, Limit, Offset

router = APIRouter(prefix="/trades", tags=["trades"])


@router.post(
    "",
    status_code=201,
    response_model=TradeOpenedOut,
    responses={
        403: {
            "model": RiskDeniedOut,
            "description": "Denied by RiskGuard; the denial is stored",
        },
        409: {"description": "client_order_id reused for a different request"},
    },
)
async def open_trade(body: TradeCreate, container: AuthorizedContainer) -> Response:
    """Check the intent with RiskGuard and, if allowed, open the position on the exchange: the entry
    fills at the market (the feed's price plus slippage), then the exit plan's stop and take-profits
    rest as reduce-only orders (GET /positions/{id}/exit-plan).

    Sending the same `client_order_id` again returns the original result (201 or 403)
    with header `Idempotent-Replayed: true`, never a second trade.
    """
    market = container.trading.market(body.symbol)
    mark = await container.trading.market_price(market.symbol)
    outcome = await container.trading.open_trade(
        body.intent(market.symbol, mark, container.trading.market_time()), body.client_order_id, current_trace_id()
    )
    decision = DecisionOut.model_validate(outcome.decision)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    if outcome.trade is None:
        denied = RiskDeniedOut(
            reasons=decision.reasons,
            profile_name=decision.profile_name,
            trace_id=decision.trace_id,
            decision=decision,
        )
        return Response(denied.model_dump_json(), 403, headers, media_type="application/json")
    view = outcome.opened
    if view is None and outcome.replayed:
        view = await container.trading.opened_view(outcome.trade["id"])
    opened = TradeOpenedOut(trade=TradeOut.model_validate(outcome.trade), decision=decision)
    if view is not None:
        opened.position = PositionOut.model_validate(view.position)
        opened.exit_plan = ExitPlanOut.of(view.position, view.plan, view.legs)
        opened.orders = [OrderOut.model_validate(o) for o in view.orders]
    return Response(opened.model_dump_json(), 201, headers, media_type="application/json")


@router.get("", response_model=TradePage)
async def list_trades(
    container: ContainerDep,
    status: Literal["OPEN", "CLOSED"] | None = None,
    symbol: Annotated[SymbolText | None, Query()] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> TradePage:
    canonical = container.trading.market(symbol).symbol if symbol else None
    items, total = await container.trading.list_trades(status, canonical, limit, offset)
    return TradePage(
        items=[TradeOut.model_validate(t) for t in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{trade_id}", response_model=TradeOut)
async def get_trade(trade_id: uuid.UUID, container: ContainerDep) -> TradeOut:
    return TradeOut.model_validate(await container.trading.get_trade(trade_id))


@router.post("/{trade_id}/close", response_model=TradeOut)
async def close_trade(trade_id: uuid.UUID, body: TradeClose, container: AuthorizedContainer) -> TradeOut:
    """Close the trade's position at the market through the exit arbiter (an operator's close):
    realized PnL net of fees and funding, equity and SafetyGovernor updates. With `price`, a market
    further than MAX_PRICE_DEVIATION_PCT from it is refused (409 price_deviation)."""
    return TradeOut.model_validate(await container.trading.close_trade(trade_id, body.price, current_trace_id()))
