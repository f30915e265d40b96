"""API shapes of positions, orders, exit plans and market prices."""

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.money import DecimalStr
from app.core.validation import Price, Reason, Usd


class PositionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    trade_id: uuid.UUID = Field(description="The trade that opened it (GET /trades/{id})")
    exchange: str
    symbol: str
    side: str
    status: str = Field(description="OPEN, CLOSED or LIQUIDATED")
    leverage: DecimalStr
    initial_amount: DecimalStr = Field(description="Contracts filled at the entry")
    amount: DecimalStr = Field(description="Contracts still open")
    entry_price: DecimalStr = Field(description="Set by the exchange's fill, not by the caller")
    margin: DecimalStr = Field(description="The isolated wallet of the position")
    realized_pnl: DecimalStr = Field(description="Net of fees and funding, USDT")
    fees: DecimalStr
    funding: DecimalStr = Field(description="Received (negative: paid), USDT")
    stop_price: DecimalStr | None = Field(description="The stop in force (moves with the trailing stop)")
    liquidation_price: DecimalStr | None
    opened_at: datetime
    closed_at: datetime | None
    close_reason: str | None
    mark_price: DecimalStr | None = Field(default=None, description="The feed's latest price known for the symbol")
    unrealized_pnl: DecimalStr | None = Field(default=None, description="At the mark price (open positions)")


class PositionPage(BaseModel):
    items: list[PositionOut]
    total: int
    limit: int
    offset: int


class FillOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    order_id: uuid.UUID
    price: DecimalStr
    amount: DecimalStr
    fee: DecimalStr
    maker: bool
    realized_pnl: DecimalStr = Field(description="Of this fill, net of its fee")
    filled_at: datetime


class PositionEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str = Field(description="funding, liquidation, arbiter_close/reduce/move_stop, arbiter_refused")
    source: str | None = Field(description="The arbiter's source: STOP, TAKE_PROFIT, OPERATOR, LIQUIDATION, …")
    detail: str
    amount: DecimalStr | None
    realized_pnl: DecimalStr | None
    created_at: datetime


class PositionDetailOut(PositionOut):
    fills: list[FillOut]
    events: list[PositionEventOut]


class ExitLegOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    kind: str = Field(description="TP, SL or TRAILING")
    trigger_price: DecimalStr
    fraction: DecimalStr
    quantity: DecimalStr
    reason: str
    status: str = Field(
        description="ACTIVE, FILLED, CANCELED, EXPIRED, or NOT_PLACED (the exchange refused an earlier leg)"
    )
    order_client_id: str | None


class ExitPlanOut(BaseModel):
    position_id: uuid.UUID
    style: str
    entry_price: DecimalStr
    liquidation_price: DecimalStr | None
    stop_bound: DecimalStr | None = Field(description="Liquidation ± the buffer: the stop stays inside it")
    stop_price: DecimalStr | None = Field(description="The stop in force now")
    trailing: dict[str, Any] | None = Field(description="The trailing stop's state (best price, stop once armed)")
    notes: list[str]
    legs: list[ExitLegOut]
    created_at: datetime

    @classmethod
    def of(cls, position: Any, plan: Any, legs: Sequence[Any]) -> "ExitPlanOut":
        """From the stored records, or from the rows a batch just wrote (mappings)."""

        def get(obj: Any, name: str) -> Any:
            return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)

        return cls(
            position_id=get(position, "id"),
            style=get(plan, "style"),
            entry_price=get(plan, "entry_price"),
            liquidation_price=get(plan, "liquidation_price"),
            stop_bound=get(plan, "stop_bound"),
            stop_price=get(position, "stop_price"),
            trailing=get(position, "trailing"),
            notes=list(get(plan, "notes")),
            legs=[ExitLegOut.model_validate(leg) for leg in legs],
            created_at=get(plan, "created_at"),
        )


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    position_id: uuid.UUID | None
    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: str
    type: str
    purpose: str = Field(description="ENTRY, TP, SL, CLOSE or REDUCE")
    amount: DecimalStr
    price: DecimalStr | None
    stop_price: DecimalStr | None
    reduce_only: bool
    status: str
    filled: DecimalStr
    average_price: DecimalStr | None
    source: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    items: list[OrderOut]
    total: int
    limit: int
    offset: int


class ClosePositionBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"amount": "0.001", "price": "64000", "reason": "take some"}]}
    )

    amount: Usd | None = Field(default=None, description="Contracts to close; omitted: all that is open")
    price: Price | None = Field(
        default=None,
        description="The price you expect; the close is refused if the market is further than MAX_PRICE_DEVIATION_PCT",
    )
    reason: Reason | None = Field(default=None, description="Kept with the arbiter's record")


class MarketPriceOut(BaseModel):
    symbol: str
    price: DecimalStr


class MissingPriceOut(BaseModel):
    symbol: str
    reason: str


class MarketPricesOut(BaseModel):
    feed: str = Field(description="replay (the bundled candles on a simulated clock) or another feed")
    now: datetime = Field(description="The feed's time (simulated for the replay)")
    prices: list[MarketPriceOut]
    missing: list[MissingPriceOut] = Field(description="Tradable symbols the feed has no price for, with why")
