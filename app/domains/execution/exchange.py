"""The exchange interface: what the paper exchange and the Binance USDⓈ-M adapter both offer.

Symbols are ccxt unified (`BTC/USDT:USDT`); amounts are contracts (base units for USDT-M linear
swaps, contractSize 1) already at the market's amount precision; prices at its price precision.
Client order ids make every order idempotent: creating an order whose client id exists returns it.
Errors are the app's own: a rejection is never retried, an unavailable exchange may be.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal, Protocol


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"  # triggers at stop_price, fills at market
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"


class OrderStatus(StrEnum):
    NEW = "NEW"  # accepted, resting (limit) or waiting for its trigger (stop / take-profit)
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


MarginMode = Literal["isolated", "cross"]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None = None  # LIMIT only
    stop_price: Decimal | None = None  # STOP_MARKET / TAKE_PROFIT_MARKET trigger
    reduce_only: bool = False
    # The paper exchange keeps one isolated position per key (the app's position id); None: per symbol,
    # as Binance does in one-way mode (the live adapter ignores it).
    position_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    price: Decimal
    amount: Decimal
    fee: Decimal  # in the settle currency (USDT), >= 0 paid
    maker: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class OrderState:
    request: OrderRequest
    exchange_order_id: str
    status: OrderStatus
    filled: Decimal = Decimal(0)
    average_price: Decimal | None = None
    fills: tuple[Fill, ...] = field(default=())
    reason: str | None = None  # why it was rejected / canceled / expired


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    symbol: str
    side: Literal["LONG", "SHORT"]
    amount: Decimal  # contracts, > 0
    entry_price: Decimal
    leverage: Decimal
    margin_mode: MarginMode
    liquidation_price: Decimal | None
    unrealized_pnl: Decimal


class ExchangeError(Exception):
    """Base of every exchange failure, with a short public reason."""


class OrderRejected(ExchangeError):
    """The exchange refused the order (invalid, insufficient margin, reduce-only would increase…): never retried."""


class InsufficientMargin(OrderRejected):
    pass


class InvalidOrder(OrderRejected):
    pass


class OrderNotFound(ExchangeError):
    pass


class ExchangeUnavailable(ExchangeError):
    """Network errors, timeouts, maintenance, rate limits: transient, retried with backoff."""


class RateLimited(ExchangeUnavailable):
    pass


class Exchange(Protocol):
    name: str

    async def set_leverage(self, symbol: str, leverage: int) -> None: ...

    async def set_margin_mode(self, symbol: str, mode: MarginMode) -> None: ...

    async def create_order(self, request: OrderRequest) -> OrderState: ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]: ...

    async def fetch_positions(self) -> list[ExchangePosition]: ...

    async def fetch_mark_price(self, symbol: str) -> Decimal: ...
