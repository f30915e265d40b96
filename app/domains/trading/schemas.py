"""Request and response bodies of the trading API."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.money import DecimalStr
from app.core.validation import ClientOrderId, Label, Price, SymbolText, Timestamp, TradeLeverage, Usd
from app.domains.execution.schemas import ExitPlanOut, OrderOut, PositionOut
from app.domains.risk.guard import Side, TradeIntent

Confidence = Annotated[Decimal, Field(ge=0, le=1, max_digits=20, decimal_places=18, allow_inf_nan=False)]

# Allowed by every default profile whenever it is sent: at the market (no `price`, so never too far
# from it; the exit plan's stop applies), no `price_as_of` and no `client_order_id` (a fixed one would
# replay or 409 the second time).
TRADE_EXAMPLE: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "side": "LONG",
    "notional": "250",
    "leverage": 3,
    "confidence": 0.8,
    "source": "ensemble",
}


class TradeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [TRADE_EXAMPLE]})

    symbol: SymbolText = Field(description="Binance id (BTCUSDT) or ccxt unified (BTC/USDT:USDT)")
    side: Side
    notional: Usd = Field(description="Position value in USDT")
    leverage: TradeLeverage
    price: Price | None = Field(
        default=None,
        description="The price you expect: refused (PRICE_DEVIATION) if the market is further than "
        "MAX_PRICE_DEVIATION_PCT; the exchange sets the fill. Omitted: at the market",
    )
    price_as_of: Timestamp | None = Field(default=None, description="When the price was observed (timezone required)")
    confidence: Confidence | None = Field(
        default=None,
        description="The signal's `confidence` (with `confidence_kind: p_tp_before_sl`, the calibrated probability "
        "that TP1 is hit before the stop); refused (MIN_CONFIDENCE) below the active `min_confidence`",
    )
    stop_loss: Price | None = None
    client_order_id: ClientOrderId | None = Field(default=None, description="Idempotency key")
    source: Label | None = Field(default=None, description="Signal source, e.g. ensemble")
    signal_as_of: Timestamp | None = Field(
        default=None,
        description="The `as_of` of the signal this trade follows: older than SIGNAL_MAX_AGE_SECONDS on the "
        "price feed's clock (the clock fills are on) is denied (STALE_PRICE)",
    )

    @model_validator(mode="after")
    def _stop_on_loss_side(self) -> "TradeCreate":
        if self.stop_loss is not None and self.price is not None:
            if self.side is Side.LONG and self.stop_loss >= self.price:
                raise ValueError(f"stop_loss {self.stop_loss} must be below the entry price {self.price} for a LONG")
            if self.side is Side.SHORT and self.stop_loss <= self.price:
                raise ValueError(f"stop_loss {self.stop_loss} must be above the entry price {self.price} for a SHORT")
        return self

    def intent(self, canonical_symbol: str, market_price: Decimal, market_time: datetime) -> TradeIntent:
        """The intent, priced at `price` when given, else at the market (`market_price`); a signal's age is
        measured at `market_time`, the price feed's now."""
        return TradeIntent(
            symbol=canonical_symbol,
            side=self.side,
            notional=self.notional,
            leverage=self.leverage,
            price=self.price if self.price is not None else market_price,
            at_market=self.price is None,
            market_price=market_price,
            price_as_of=self.price_as_of,
            confidence=self.confidence,
            stop_loss=self.stop_loss,
            source=self.source,
            signal_age_seconds=(
                None if self.signal_as_of is None else (market_time - self.signal_as_of).total_seconds()
            ),
        )


class TradeClose(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})

    price: Price | None = Field(
        default=None,
        description="The price you expect: refused (409 price_deviation) if the market is further than "
        "MAX_PRICE_DEVIATION_PCT; the exchange sets the fill. Omitted: at the market",
    )


class ReasonOut(BaseModel):
    code: str
    detail: str


class DecisionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    allowed: bool
    reasons: list[ReasonOut]
    assumptions: list[str]
    profile_name: str
    risk_pct: DecimalStr
    limits: dict[str, Any]
    client_order_id: str | None
    trade_id: uuid.UUID | None
    symbol: str
    side: str
    notional: DecimalStr
    leverage: DecimalStr
    price: DecimalStr
    trace_id: str
    created_at: datetime


class TradeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    client_order_id: str | None
    symbol: str
    side: str
    leverage: DecimalStr
    requested_notional: DecimalStr
    notional: DecimalStr
    quantity: DecimalStr
    margin: DecimalStr
    entry_price: DecimalStr
    stop_loss: DecimalStr | None
    status: str
    exit_price: DecimalStr | None
    entry_fee: DecimalStr
    exit_fee: DecimalStr | None
    realized_pnl: DecimalStr | None
    confidence: DecimalStr | None
    signal_source: str | None
    risk_profile_name: str
    decision_id: uuid.UUID
    trace_id: str
    opened_at: datetime
    closed_at: datetime | None


class TradeOpenedOut(BaseModel):
    trade: TradeOut
    decision: DecisionOut
    position: PositionOut | None = Field(default=None, description="The position the exchange opened")
    exit_plan: ExitPlanOut | None = Field(default=None, description="Its exit plan, validated before any order")
    orders: list[OrderOut] = Field(default=[], description="The entry and the protective orders, as placed")


class RiskDeniedOut(BaseModel):
    error: str = "risk_denied"
    reasons: list[ReasonOut]
    profile_name: str
    trace_id: str
    decision: DecisionOut


class TradePage(BaseModel):
    items: list[TradeOut]
    total: int
    limit: int
    offset: int


class DecisionPage(BaseModel):
    items: list[DecisionOut]
    total: int
    limit: int
    offset: int


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    starting_balance: DecimalStr
    balance: DecimalStr = Field(description="Cash: the starting balance plus realized PnL, net of fees and funding")
    unrealized_pnl: DecimalStr = Field(description="Of the open positions at the feed's mark prices")
    equity: DecimalStr = Field(description="Marked to market: balance + unrealized PnL")
    open_positions: int
    open_notional: DecimalStr
    used_margin: DecimalStr
    updated_at: datetime
