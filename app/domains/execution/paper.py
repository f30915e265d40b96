"""The paper exchange's matching engine: pure and synchronous, it sets every fill price from the
feed's bars, never from the caller.

- MARKET fills at once at the current price with slippage against the taker (a buy pays more, a
  sell gets less), taker fee.
- LIMIT: a limit that is marketable now fills at once like a market order but never beyond its
  limit; otherwise it rests and fills at its price, maker fee, when a later bar trades through it
  (a buy when the low reaches it, a sell when the high does).
- STOP_MARKET triggers when a bar's range reaches its stop price and fills at the stop, or at the
  bar's open when the bar opened beyond it (a gap), with slippage; TAKE_PROFIT_MARKET triggers when
  the range reaches its trigger and fills there with slippage. Both pay the taker fee.
- Inside one bar the path is unknown, so the conservative order is used: the triggers against the
  position (stops, then liquidation) before the ones in its favour (take-profits, limits), each group
  by distance from the bar's open. When a stop and a take-profit both lie inside one bar, the stop
  fills first and the take-profit then has nothing left to reduce.
- Reduce-only orders never increase or flip a position: they are cut to the position's size, and
  expire when there is none.
- Positions are kept per key: the order's `position_id` (one isolated position per trade of the app),
  else the symbol (one-way mode, as Binance nets a symbol).
- Fees and funding are rounded (half up) to 8 decimals of USDT.
- Funding: at each settlement (every 8 h in the bundled rates) an open position receives
  `funding_fee(side, amount, mark, rate)` (negative: pays), the mark being the open of the bar that
  starts at the settlement.
- Isolated margin: a position's wallet is its margin; when a bar reaches `liquidation_price` the
  position is closed there and its margin is lost.

Money is Decimal; prices are rounded to the market's tick with ccxt (`precision.price_to_precision`).
"""

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from app.domains.execution.exchange import (
    ExchangePosition,
    Fill,
    InsufficientMargin,
    InvalidOrder,
    MarginMode,
    OrderNotFound,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
)
from app.domains.execution.margin import funding_fee, leverage_tier, liquidation_price
from app.domains.execution.precision import price_to_precision

ZERO = Decimal(0)
ONE = Decimal(1)
USDT = Decimal("0.00000001")  # fees and funding settle to the cent's millionth, as the exchange does


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed candle of the feed (prices in the quote currency, open time in ms UTC)."""

    symbol: str
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass(frozen=True, slots=True)
class PaperConfig:
    slippage_pct: Decimal = Decimal("0.02")  # against the taker, percent of the price
    taker_fee: Decimal = Decimal("0.0004")
    maker_fee: Decimal = Decimal("0.0002")


@dataclass
class PaperPosition:
    id: str
    symbol: str
    side: Literal["LONG", "SHORT"]
    amount: Decimal
    entry_price: Decimal
    leverage: Decimal
    margin: Decimal  # the isolated wallet of the position
    realized_pnl: Decimal = ZERO  # net of fees and funding
    fees: Decimal = ZERO
    funding: Decimal = ZERO  # received (negative: paid)
    opened_bar_ms: int | None = None  # the bar the position entered in: its opening funding is not charged
    _lp_key: tuple[Decimal, Decimal, Decimal] | None = field(default=None, repr=False, compare=False)
    _lp: Decimal | None = field(default=None, repr=False, compare=False)

    @property
    def sign(self) -> int:
        return 1 if self.side == "LONG" else -1

    def liquidation(self) -> Decimal | None:
        """Recomputed only when the amount, the entry or the margin changed since the last call."""
        key = (self.amount, self.entry_price, self.margin)
        if self._lp_key == key:
            return self._lp
        self._lp_key, self._lp = key, self._liquidation()
        return self._lp

    def _liquidation(self) -> Decimal | None:
        tier = leverage_tier(symbol=self.symbol, notional=self.amount * self.entry_price)
        result: Decimal | None = liquidation_price(
            side=self.side,
            open_price=self.entry_price,
            amount=self.amount,
            wallet_balance=self.margin,
            mm_ratio=tier.mm_ratio,
            maintenance_amount=tier.maintenance_amount,
        )
        return result

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.sign * self.amount * (mark - self.entry_price)


@dataclass(frozen=True, slots=True)
class BookEvent:
    """What happened: a fill (with the position after it), a funding payment, a liquidation, an expiry."""

    kind: Literal["fill", "funding", "liquidation", "expired"]
    symbol: str
    at: datetime
    order: OrderState | None = None
    fill: Fill | None = None
    position_id: str | None = None
    realized_pnl: Decimal = ZERO  # of this event, net of its fee
    amount: Decimal = ZERO
    detail: str = ""


@dataclass
class _Resting:
    state: OrderState
    seq: int


def _slip(price: Decimal, side: OrderSide, pct: Decimal) -> Decimal:
    factor = ONE + pct / 100 if side is OrderSide.BUY else ONE - pct / 100
    return price * factor


@dataclass
class PaperBook:
    """The exchange's state: balance, one net position per symbol (one-way mode), resting orders."""

    balance: Decimal
    config: PaperConfig = field(default_factory=PaperConfig)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())
    positions: dict[str, PaperPosition] = field(default_factory=dict)  # by key: position id, else symbol
    leverage: dict[str, Decimal] = field(default_factory=dict)  # by position key, else by symbol
    orders: dict[str, OrderState] = field(default_factory=dict)  # by client order id, every order ever
    _resting: dict[str, _Resting] = field(default_factory=dict)
    _by_symbol: dict[str, dict[str, _Resting]] = field(default_factory=dict)  # the same orders, per symbol
    _by_key: dict[str, dict[str, _Resting]] = field(default_factory=dict)  # and per position key
    _seq: "itertools.count[int]" = field(default_factory=itertools.count)
    _outbox: list[BookEvent] = field(default_factory=list)
    _margin_total: Decimal = ZERO  # Σ margin of the open positions  # expiries caused by an action, reported with it

    # --- account -----------------------------------------------------------------------------------
    def set_leverage(self, symbol: str, leverage: int) -> None:
        if not 1 <= leverage <= 125:
            raise InvalidOrder(f"leverage {leverage} is outside 1..125")
        self.leverage[symbol] = Decimal(leverage)

    def set_margin_mode(self, symbol: str, mode: MarginMode) -> None:
        if mode != "isolated":
            raise InvalidOrder("the paper exchange supports isolated margin only")

    def available(self) -> Decimal:
        """Cash not held as a position's margin (a running total: O(1) however many positions)."""
        return self.balance - self._margin_total

    def recount_margin(self) -> None:
        """Recompute the running margin total (after positions were set directly, e.g. rebuilt from rows)."""
        self._margin_total = sum((p.margin for p in self.positions.values()), ZERO)

    def exchange_positions(self, marks: dict[str, Decimal]) -> list[ExchangePosition]:
        return [
            ExchangePosition(
                symbol=p.symbol,
                side=p.side,
                amount=p.amount,
                entry_price=p.entry_price,
                leverage=p.leverage,
                margin_mode="isolated",
                liquidation_price=p.liquidation(),
                unrealized_pnl=p.unrealized(marks[p.symbol]) if p.symbol in marks else ZERO,
            )
            for p in self.positions.values()
        ]

    # --- orders ------------------------------------------------------------------------------------
    def submit(self, request: OrderRequest, price: Decimal) -> tuple[OrderState, list[BookEvent]]:
        """Accept `request` with the market at `price` now. Idempotent on the client order id."""
        state, events = self._submit(request, price)
        return state, events + self._drain()

    def _drain(self) -> list[BookEvent]:
        out, self._outbox = self._outbox, []
        return out

    def _submit(self, request: OrderRequest, price: Decimal) -> tuple[OrderState, list[BookEvent]]:
        existing = self.orders.get(request.client_order_id)
        if existing is not None:
            if existing.request != request:
                raise InvalidOrder(f"client order id {request.client_order_id!r} was used for another order")
            return existing, []
        if request.amount <= 0:
            raise InvalidOrder("amount must be > 0")
        state = OrderState(request, f"paper-{uuid.uuid4().hex[:16]}", OrderStatus.NEW)
        if request.type in (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET):
            if request.stop_price is None or request.stop_price <= 0:
                raise InvalidOrder(f"{request.type.value} needs a stop_price > 0")
            return self._rest(state), []
        if request.type is OrderType.LIMIT:
            if request.price is None or request.price <= 0:
                raise InvalidOrder("LIMIT needs a price > 0")
            crosses = price <= request.price if request.side is OrderSide.BUY else price >= request.price
            if not crosses:
                return self._rest(state), []
            fill_price = _slip(price, request.side, self.config.slippage_pct)
            limit = request.price
            fill_price = min(fill_price, limit) if request.side is OrderSide.BUY else max(fill_price, limit)
            return self._fill(state, fill_price, maker=False)
        return self._fill(state, _slip(price, request.side, self.config.slippage_pct), maker=False)

    def expected_fill(self, symbol: str, side: OrderSide, price: Decimal) -> Decimal:
        """The price a market order of `side` fills at with the market at `price`."""
        return price_to_precision(symbol, _slip(price, side, self.config.slippage_pct))

    def restore(self, state: OrderState) -> None:
        """Put back a resting order (rebuilding the book from stored orders)."""
        self._rest(state)

    def resting(self, client_order_id: str) -> bool:
        return client_order_id in self._resting

    def amend(self, client_order_id: str, amount: Decimal) -> OrderState:
        """Change a resting order's amount (a stop resized after a partial close)."""
        resting = self._resting.get(client_order_id)
        if resting is None:
            raise OrderNotFound(f"no resting order {client_order_id!r}")
        state = replace(resting.state, request=replace(resting.state.request, amount=amount))
        resting.state = state
        self.orders[client_order_id] = state
        return state

    def cancel(self, client_order_id: str) -> OrderState:
        state = self.orders.get(client_order_id)
        if state is None:
            raise OrderNotFound(f"no order {client_order_id!r}")
        if client_order_id in self._resting:
            self._unrest(client_order_id)
            state = replace(state, status=OrderStatus.CANCELED, reason="canceled")
            self.orders[client_order_id] = state
        return state

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        return [
            r.state
            for r in sorted(self._resting.values(), key=lambda r: r.seq)
            if symbol is None or r.state.request.symbol == symbol
        ]

    def _unrest(self, client_order_id: str) -> _Resting | None:
        resting = self._resting.pop(client_order_id, None)
        if resting is not None:
            self._by_symbol.get(resting.state.request.symbol, {}).pop(client_order_id, None)
            key = _key(resting.state.request)
            of_key = self._by_key.get(key)
            if of_key is not None:
                of_key.pop(client_order_id, None)
                if not of_key:
                    del self._by_key[key]  # closed positions leave nothing behind
        return resting

    def _rest(self, state: OrderState) -> OrderState:
        self.orders[state.request.client_order_id] = state
        resting = _Resting(state, next(self._seq))
        self._resting[state.request.client_order_id] = resting
        self._by_symbol.setdefault(state.request.symbol, {})[state.request.client_order_id] = resting
        self._by_key.setdefault(_key(state.request), {})[state.request.client_order_id] = resting
        return state

    # --- bars --------------------------------------------------------------------------------------
    def on_bar(self, bar: Bar, funding_rate: Decimal | None = None) -> list[BookEvent]:
        """Everything `bar` causes, in the documented order. `funding_rate` is the rate settled at
        the bar's open, if one is."""
        events: list[BookEvent] = []
        if funding_rate is not None:
            for position in [p for p in self.positions.values() if p.symbol == bar.symbol]:
                if position.opened_bar_ms is not None and position.opened_bar_ms >= bar.open_ms:
                    continue  # it entered at (or after) this settlement: not held through it
                events.append(self._fund(position, bar.open, funding_rate))
        for trigger in self._triggers(bar):
            events.extend(trigger())
            events.extend(self._drain())
        return events

    def _triggers(self, bar: Bar) -> list[Callable[[], list[BookEvent]]]:
        """The bar's triggered actions in the conservative order (see the module docstring)."""
        adverse: list[tuple[Decimal, int, Callable[[], list[BookEvent]]]] = []
        favourable: list[tuple[Decimal, int, Callable[[], list[BookEvent]]]] = []
        for client_id, resting in list(self._by_symbol.get(bar.symbol, {}).items()):
            request = resting.state.request
            hit = self._hit(request, bar)
            if hit is None:
                continue
            position = self.positions.get(_key(request))
            against = position is not None and _closes(request.side, position.side)
            is_stop = request.type is OrderType.STOP_MARKET
            group = adverse if is_stop and against else favourable
            group.append((abs(hit - bar.open), resting.seq, self._trigger_fill(client_id, bar, hit)))
        for key, position in self.positions.items():
            if position.symbol != bar.symbol:
                continue
            lp = position.liquidation()
            if lp is not None and (bar.low <= lp if position.side == "LONG" else bar.high >= lp):
                adverse.append((abs(lp - bar.open), -1, self._liquidate(key, position.id, bar, lp)))
        return [action for _, _, action in sorted(adverse, key=lambda a: (a[0], a[1]))] + [
            action for _, _, action in sorted(favourable, key=lambda a: (a[0], a[1]))
        ]

    @staticmethod
    def _hit(request: OrderRequest, bar: Bar) -> Decimal | None:
        """The price at which `request` triggers or fills in `bar`, or None."""
        level = request.stop_price if request.type is not OrderType.LIMIT else request.price
        assert level is not None
        buy = request.side is OrderSide.BUY
        if request.type is OrderType.STOP_MARKET:  # buy stops above, sell stops below
            if buy and bar.high >= level:
                return max(level, bar.open)  # a bar that opened beyond the stop fills at its open
            if not buy and bar.low <= level:
                return min(level, bar.open)
            return None
        if request.type is OrderType.TAKE_PROFIT_MARKET:  # buy take-profits below, sell take-profits above
            if buy and bar.low <= level:
                return level
            if not buy and bar.high >= level:
                return level
            return None
        if buy and bar.low <= level:
            return level
        if not buy and bar.high >= level:
            return level
        return None

    def _trigger_fill(self, client_id: str, bar: Bar, hit: Decimal) -> Callable[[], list[BookEvent]]:
        def run() -> list[BookEvent]:
            resting = self._unrest(client_id)
            if resting is None:  # canceled or filled by an earlier trigger of this bar
                return []
            request = resting.state.request
            if request.type is OrderType.LIMIT:
                _, events = self._fill(resting.state, hit, maker=True, at_ms=bar.open_ms)
            else:
                price = _slip(hit, request.side, self.config.slippage_pct)
                _, events = self._fill(resting.state, price, maker=False, at_ms=bar.open_ms)
            return events

        return run

    # --- fills and positions -------------------------------------------------------------------------
    def record_fill(self, state: OrderState) -> list[BookEvent]:
        """Apply a fill another venue made (the live exchange): `state.filled` contracts at its average
        price, at the taker fee rate. Its order leaves the resting set; the events are as for a paper fill."""
        if state.average_price is None or state.filled <= 0:
            raise InvalidOrder(f"order {state.request.client_order_id} reports no fill to record")
        self._unrest(state.request.client_order_id)
        _, events = self._fill(state, state.average_price, maker=False, amount=state.filled, external=True)
        return events + self._drain()

    def close_order(self, state: OrderState, now: datetime) -> list[BookEvent]:
        """An order another venue canceled or expired: it leaves the resting set, reported as expired."""
        self._unrest(state.request.client_order_id)
        self.orders[state.request.client_order_id] = state
        return [BookEvent("expired", state.request.symbol, now, state, detail=state.reason or state.status.value)]

    def _fill(
        self,
        state: OrderState,
        raw_price: Decimal,
        *,
        maker: bool,
        at_ms: int | None = None,
        amount: Decimal | None = None,
        external: bool = False,
    ) -> tuple[OrderState, list[BookEvent]]:
        """Fill `amount` (default: the whole order) at `raw_price`, rounded to the tick; an `external` fill
        (the exchange's, at its average price) is recorded as it is: no rounding, no margin check."""
        request = state.request
        now = self.clock()
        price = raw_price if external else price_to_precision(request.symbol, raw_price)
        position = self.positions.get(_key(request))
        amount = request.amount if amount is None else amount
        if request.reduce_only:
            if position is None or not _closes(request.side, position.side):
                return self._expire(state, "reduce-only: no position to reduce", now), []
            amount = min(amount, position.amount)
        fee_rate = self.config.maker_fee if maker else self.config.taker_fee
        fee = (amount * price * fee_rate).quantize(USDT, rounding=ROUND_HALF_UP)
        events: list[BookEvent] = []
        if position is not None and _closes(request.side, position.side):
            closing = min(amount, position.amount)
            closing_fee = (fee * closing / amount).quantize(USDT, rounding=ROUND_HALF_UP)
            realized = self._reduce(_key(request), position, closing, price, closing_fee)
            fill = Fill(price, closing, closing_fee, maker, now)
            events.append(BookEvent("fill", request.symbol, now, None, fill, position.id, realized, closing, "reduce"))
            amount -= closing
            fee -= fill.fee
        if amount > 0:
            opened = self._open(request, amount, price, fee, check_margin=not external)
            fill = Fill(price, amount, fee, maker, now)
            events.append(BookEvent("fill", request.symbol, now, None, fill, opened.id, -fee, amount, "open"))
        fills = tuple(e.fill for e in events if e.fill is not None)
        filled = sum((f.amount for f in fills), ZERO)
        done = replace(state, status=OrderStatus.FILLED, filled=filled, average_price=price, fills=state.fills + fills)
        self.orders[request.client_order_id] = done
        self._unrest(request.client_order_id)
        events = [replace(e, order=done) for e in events]
        return done, events

    def _expire(self, state: OrderState, reason: str, now: datetime) -> OrderState:
        expired = replace(state, status=OrderStatus.EXPIRED, reason=reason)
        self.orders[state.request.client_order_id] = expired
        self._unrest(state.request.client_order_id)
        self._outbox.append(BookEvent("expired", state.request.symbol, now, expired, detail=reason))
        return expired

    def _open(
        self, request: OrderRequest, amount: Decimal, price: Decimal, fee: Decimal, *, check_margin: bool = True
    ) -> PaperPosition:
        leverage = self.leverage.get(_key(request), self.leverage.get(request.symbol, ONE))
        margin = (amount * price / leverage).quantize(USDT, rounding=ROUND_HALF_UP)
        if check_margin and margin + fee > self.available():
            raise InsufficientMargin(
                f"margin {margin:.8f} + fee {fee:.8f} USDT exceeds the available {self.available():.8f}"
            )
        self.balance -= fee
        key = _key(request)
        position = self.positions.get(key)
        if position is None:
            side: Literal["LONG", "SHORT"] = "LONG" if request.side is OrderSide.BUY else "SHORT"
            position = PaperPosition(
                request.position_id or uuid.uuid4().hex, request.symbol, side, ZERO, price, leverage, ZERO
            )
            self.positions[key] = position
        total = position.amount + amount
        position.entry_price = (position.entry_price * position.amount + price * amount) / total
        position.amount = total
        position.margin += margin
        self._margin_total += margin
        position.fees += fee
        position.realized_pnl -= fee
        return position

    def _reduce(self, key: str, position: PaperPosition, amount: Decimal, price: Decimal, fee: Decimal) -> Decimal:
        gross = position.sign * amount * (price - position.entry_price)
        released = position.margin * amount / position.amount
        self.balance += gross - fee
        position.margin -= released
        self._margin_total -= released
        position.amount -= amount
        position.fees += fee
        position.realized_pnl += gross - fee
        if position.amount == 0:
            del self.positions[key]
            for resting in list(self._by_key.get(key, {}).values()):  # nothing left to reduce
                if resting.state.request.reduce_only:
                    self._expire(resting.state, "position closed", self.clock())
        return gross - fee

    def _fund(self, position: PaperPosition, mark: Decimal, rate: Decimal) -> BookEvent:
        amount: Decimal = funding_fee(
            side=position.side, amount=position.amount, mark_price=mark, funding_rate=rate
        ).quantize(USDT, rounding=ROUND_HALF_UP)
        self.balance += amount
        position.margin += amount  # isolated: funding settles into the position's wallet
        self._margin_total += amount
        position.funding += amount
        position.realized_pnl += amount
        return BookEvent(
            "funding",
            position.symbol,
            self.clock(),
            position_id=position.id,
            realized_pnl=amount,
            amount=position.amount,
            detail=f"rate {rate} at mark {mark}",
        )

    def _liquidate(self, key: str, position_id: str, bar: Bar, lp: Decimal) -> Callable[[], list[BookEvent]]:
        def run() -> list[BookEvent]:
            position = self.positions.get(key)
            if position is None or position.id != position_id:
                return []  # a stop closed it first
            lost = -position.margin
            self._margin_total -= position.margin
            self.balance += lost
            position.realized_pnl += lost
            amount = position.amount
            position.amount = ZERO
            del self.positions[key]
            now = self.clock()
            for resting in list(self._by_key.get(key, {}).values()):
                if resting.state.request.reduce_only:
                    self._expire(resting.state, "position liquidated", now)
            return [
                BookEvent(
                    "liquidation",
                    bar.symbol,
                    now,
                    position_id=position_id,
                    realized_pnl=lost,
                    amount=amount,
                    detail=f"liquidated at {price_to_precision(bar.symbol, lp)}: the isolated margin is lost",
                )
            ]

        return run


def _key(request: OrderRequest) -> str:
    return request.position_id or request.symbol


def _closes(side: OrderSide, position_side: str) -> bool:
    return (side is OrderSide.SELL) == (position_side == "LONG")
