"""Where orders go: the paper book, or a live exchange with the book as its local mirror.

`PaperExecution` talks to a `Venue` and never to an exchange directly. Both venues keep a `PaperBook`:
for paper it IS the exchange (it sets fills from the feed and triggers stops on the bars); for live it
is the mirror of what the exchange did (positions, margin, liquidation prices computed with
`margin.py`), updated only from the exchange's answers — send first, then record.

Live specifics (Binance USDⓈ-M, one-way mode):
- the exchange triggers the protective orders; each bar, the live venue asks the exchange about the
  resting orders of the bar's symbol and records the fills it reports (at their average price, with
  the configured taker fee: the exact commission is in the exchange's trade history);
- a resting order's amount cannot be changed in place (`amends` is False): after a partial close
  the stop keeps its amount, and reduce-only caps it at the position on the exchange;
- one net position per symbol: an entry against an open position of the other side is refused;
- funding and liquidation happen on the exchange: the mirror does not simulate them.
"""

import logging
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from app.domains.execution.binance import BinanceUsdmExchange, ExpectedOrder, ExpectedPosition, ReadyState
from app.domains.execution.exchange import (
    ExchangeError,
    InvalidOrder,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
)
from app.domains.execution.paper import Bar, BookEvent, PaperBook

logger = logging.getLogger(__name__)
DONE = (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED)


class Venue(Protocol):
    name: str
    amends: bool  # a resting order's amount can be changed in place
    book: PaperBook

    def ready(self) -> ReadyState: ...

    def expected_fill(self, symbol: str, side: OrderSide, price: Decimal) -> Decimal: ...

    async def submit(self, request: OrderRequest, price: Decimal) -> tuple[OrderState, list[BookEvent]]: ...

    async def cancel(self, client_order_id: str) -> OrderState: ...

    async def amend(self, client_order_id: str, amount: Decimal) -> OrderState: ...

    async def on_bar(self, bar: Bar, funding_rate: Decimal | None) -> list[BookEvent]: ...


class PaperVenue:
    """The paper book is the exchange: fills at the feed's price with slippage, triggers on the bars."""

    name = "paper"
    amends = True

    def __init__(self, book: PaperBook) -> None:
        self.book = book

    def ready(self) -> ReadyState:
        return ReadyState(True, "paper exchange: fills from the price feed")

    def expected_fill(self, symbol: str, side: OrderSide, price: Decimal) -> Decimal:
        return self.book.expected_fill(symbol, side, price)

    async def submit(self, request: OrderRequest, price: Decimal) -> tuple[OrderState, list[BookEvent]]:
        return self.book.submit(request, price)

    async def cancel(self, client_order_id: str) -> OrderState:
        return self.book.cancel(client_order_id)

    async def amend(self, client_order_id: str, amount: Decimal) -> OrderState:
        return self.book.amend(client_order_id, amount)

    async def on_bar(self, bar: Bar, funding_rate: Decimal | None) -> list[BookEvent]:
        return self.book.on_bar(bar, funding_rate)


class LiveVenue:
    """Binance USDⓈ-M through the ccxt adapter; the book mirrors what the exchange reports."""

    amends = False

    def __init__(self, exchange: BinanceUsdmExchange, book: PaperBook) -> None:
        self.exchange = exchange
        self.book = book
        self.name = exchange.name
        self._leverage: dict[str, int] = {}  # symbol -> leverage last set on the exchange

    def ready(self) -> ReadyState:
        return self.exchange.ready

    def expected_fill(self, symbol: str, side: OrderSide, price: Decimal) -> Decimal:
        """The mark: a live market order's fill is not known before it happens (slippage is the market's)."""
        return price

    async def reconcile(self, orders: list[OrderRequest], positions: list[ExpectedPosition]) -> ReadyState:
        """Compare the database's open orders and positions with the exchange's; `ready` follows."""
        await self.exchange.reconcile([ExpectedOrder.from_request(o) for o in orders], positions)
        return self.exchange.ready

    async def submit(self, request: OrderRequest, price: Decimal) -> tuple[OrderState, list[BookEvent]]:
        key = request.position_id or request.symbol
        if not request.reduce_only:
            opposite = [
                p
                for p in self.book.positions.values()
                if p.symbol == request.symbol and (p.side == "LONG") != (request.side is OrderSide.BUY)
            ]
            if opposite:
                raise InvalidOrder(
                    f"one-way mode: {request.symbol} holds a {opposite[0].side} position; close it before "
                    f"opening the other side"
                )
            wanted = self.book.leverage.get(key, self.book.leverage.get(request.symbol, Decimal(1)))
            if wanted != wanted.to_integral_value():
                raise InvalidOrder(f"Binance takes whole-number leverage, not {wanted}")
            leverage = int(wanted)
            if self._leverage.get(request.symbol) != leverage:
                await self.exchange.set_margin_mode(request.symbol, "isolated")
                await self.exchange.set_leverage(request.symbol, leverage)
                self._leverage[request.symbol] = leverage
        state = await self.exchange.create_order(request)
        if state.status in DONE:
            raise OrderRejected(f"{request.client_order_id}: {state.status.value} {state.reason or ''}".strip())
        if state.filled > 0 and state.average_price is not None:
            events = self.book.record_fill(state)
            await self._cancel_orphans(events)
            done = next((e.order for e in events if e.order is not None and e.kind == "fill"), state)
            return done, events
        self.book.restore(state)  # resting on the exchange; the mirror only remembers it
        return state, []

    async def cancel(self, client_order_id: str) -> OrderState:
        known = self.book.orders.get(client_order_id)
        if known is None:
            return self.book.cancel(client_order_id)  # raises OrderNotFound
        if self.book.resting(client_order_id):
            await self.exchange.cancel_order(known.request.symbol, client_order_id)
        return self.book.cancel(client_order_id)

    async def amend(self, client_order_id: str, amount: Decimal) -> OrderState:
        raise InvalidOrder("the live exchange does not amend resting orders (reduce-only caps them instead)")

    async def on_bar(self, bar: Bar, funding_rate: Decimal | None) -> list[BookEvent]:
        """What the exchange did to the resting orders of the bar's symbol since the last look."""
        resting = self.book.open_orders(bar.symbol)
        # Every answer first, then the mirror: a failed request leaves the mirror as it was.
        states = [await self.exchange.fetch_order(bar.symbol, o.request.client_order_id) for o in resting]
        events: list[BookEvent] = []
        for known, state in zip(resting, states, strict=True):
            if state.status is OrderStatus.FILLED and state.filled > 0 and state.average_price is not None:
                events += self.book.record_fill(_with_request(state, known))
            elif state.status in DONE:
                events += self.book.close_order(_with_request(state, known), _at(bar))
        await self._cancel_orphans(events)
        return events

    async def _cancel_orphans(self, events: list[BookEvent]) -> None:
        """Orders the mirror expired because their position closed still rest on the exchange (Binance
        keeps reduce-only conditional orders): cancel them there. A failure is logged; reduce-only keeps
        such an order harmless, and reconciliation reports it."""
        for event in events:
            if event.kind != "expired" or event.order is None or event.order.status is not OrderStatus.EXPIRED:
                continue
            request = event.order.request
            if not request.reduce_only or request.type not in (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET):
                continue
            try:
                await self.exchange.cancel_order(request.symbol, request.client_order_id)
            except OrderNotFound:
                pass
            except ExchangeError as exc:
                logger.warning(
                    "orphan_cancel_failed", extra={"client_order_id": request.client_order_id, "error": str(exc)}
                )

    async def poll(self, now: datetime) -> list[BookEvent]:
        """Between bars: the exchange's open orders in one request; each order the mirror still holds that
        is no longer open there is asked about and its fill (or cancel) recorded."""
        resting = self.book.open_orders()
        if not resting:
            return []
        still_open = {o.request.client_order_id for o in await self.exchange.fetch_open_orders()}
        gone = [o for o in resting if o.request.client_order_id not in still_open]
        states = [await self.exchange.fetch_order(o.request.symbol, o.request.client_order_id) for o in gone]
        events: list[BookEvent] = []
        for known, state in zip(gone, states, strict=True):
            if state.status is OrderStatus.FILLED and state.filled > 0 and state.average_price is not None:
                events += self.book.record_fill(_with_request(state, known))
            elif state.status in DONE:
                events += self.book.close_order(_with_request(state, known), now)
        await self._cancel_orphans(events)
        return events

    def invalidate(self, reason: str) -> None:
        """The mirror may no longer be what the exchange holds: no new trade until reconciled again."""
        self.exchange.mark_unreconciled(reason)


def _with_request(state: OrderState, resting: OrderState) -> OrderState:
    """The exchange's state of an order, keeping the request as the app made it (its position key)."""
    return replace(state, request=resting.request)


def _at(bar: Bar) -> datetime:
    return datetime.fromtimestamp(bar.open_ms / 1000, tz=UTC)
