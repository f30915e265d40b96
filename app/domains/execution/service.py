"""PaperExecution: positions on the paper exchange, their exit plans and protective orders, and what
every bar of the feed does to them — recorded as rows in the same transaction as the trade.

TradingService calls it under the account lock (inside its batch): `open` when RiskGuard allowed a
trade, `close` for an operator's close, `apply_bar` for the position monitor. Every close, partial
or stop move goes through the exit arbiter (`exits.arbiter.arbitrate`), with its source and reason
recorded as a position event. The book and the cached open state are rebuilt from the tables on
start and after a failed batch, so they never hold what the database does not.
"""

import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import HOUR_MS
from app.domains.execution.binance import BinanceUsdmExchange, ExpectedPosition, ReadyState
from app.domains.execution.exchange import (
    ExchangeError,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
)
from app.domains.execution.feed import NoPrice, PriceFeed
from app.domains.execution.models import ExitLegRecord, Order, Position
from app.domains.execution.paper import Bar, BookEvent, PaperBook, PaperConfig, PaperPosition
from app.domains.execution.precision import amount_to_precision, price_to_precision
from app.domains.execution.reading import READING_BARS, MarketReading, read_closes, read_market
from app.domains.execution.venue import LiveVenue, PaperVenue, Venue
from app.domains.exits.arbiter import ExitKind, ExitProposal, ExitSource, PositionView, arbitrate
from app.domains.exits.harvest import (
    AdaptiveHarvestPolicy,
    Bias,
    HarvestAction,
    HarvestContext,
    HarvestPolicy,
    HarvestPosition,
    HarvestSettings,
    HarvestState,
    heat_gate,
    kill_score,
    propose,
    r_multiple,
    resolve_settings,
)
from app.domains.exits.plan import ExitConfig, ExitContext, ExitPlan, LegKind, PlanRefused, TrailingStop, build_plan
from app.domains.markets.catalog import MarketCatalog
from app.domains.risk.guard import Side

Row = dict[str, Any]
ZERO = Decimal(0)
USDT = Decimal("0.00000001")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionConfig:
    slippage_pct: Decimal = Decimal("0.02")
    atr_bars: int = 14  # closed 1h bars behind the exit plan's ATR (0: always the static ladder)
    taker_fee: Decimal = Decimal("0.0004")
    maker_fee: Decimal = Decimal("0.0002")
    exit: ExitConfig = field(default_factory=ExitConfig)


@dataclass
class ExecRows:
    """What one batch writes for the exchange side."""

    new_positions: list[Row] = field(default_factory=list)
    positions: dict[uuid.UUID, Row] = field(default_factory=dict)  # existing rows updated
    new_orders: list[Row] = field(default_factory=list)
    orders: dict[str, Row] = field(default_factory=dict)  # existing rows updated, by client id
    fills: list[Row] = field(default_factory=list)
    plans: list[Row] = field(default_factory=list)
    new_legs: list[Row] = field(default_factory=list)
    legs: dict[uuid.UUID, Row] = field(default_factory=dict)
    events: list[Row] = field(default_factory=list)
    # what the account row must take (TradingService applies and resets them)
    cash: Decimal = ZERO  # realized PnL, fees and funding
    notional: Decimal = ZERO  # open notional at entry prices
    margin: Decimal = ZERO  # initial margin of the open amounts

    def __bool__(self) -> bool:
        return any(
            (self.new_positions, self.positions, self.new_orders, self.orders, self.fills, self.plans, self.new_legs)
        ) or bool(self.legs or self.events)


class ExchangeStateUnknown(RuntimeError):
    """The exchange holds something this batch cannot record truthfully: the batch fails and the venue
    is reconciled again before any new trade (not an ExchangeError: it must not read as a clean refusal)."""


@dataclass(frozen=True)
class Opened:
    position: Row
    plan: ExitPlan
    fill_price: Decimal
    amount: Decimal
    fee: Decimal
    closed: tuple["Closed", ...] = ()  # closed at once: the exchange refused its protective orders


@dataclass(frozen=True)
class OpenedView:
    """What an opening created, as stored: the position, its exit plan and legs, its orders (rows)."""

    position: Row
    plan: Row
    legs: list[Row]
    orders: list[Row]


@dataclass(frozen=True)
class Closed:
    """A position that closed in this batch: what the trade row and the account need."""

    position: Row
    exit_price: Decimal  # average of the closing fills (the liquidation price for a liquidation)
    exit_fee: Decimal
    reason: str


@dataclass
class _Open:
    """The cached state of one open position: its row, its resting orders and legs."""

    row: Row
    orders: dict[str, Row] = field(default_factory=dict)  # resting orders by client id
    legs: dict[str, Row] = field(default_factory=dict)  # by order client id
    closing_value: Decimal = ZERO  # Σ price x amount of the closing fills
    closing_fees: Decimal = ZERO
    trailing: TrailingStop | None = None  # the state of row["trailing"], parsed once
    harvest: HarvestState = field(default_factory=HarvestState)
    harvest_position: HarvestPosition | None = None  # built once from the row (`_harvest_position`)


def _side_of(position_side: str, closing: bool) -> OrderSide:
    buy = (position_side == "LONG") != closing
    return OrderSide.BUY if buy else OrderSide.SELL


class PaperExecution:
    """Positions on a venue: the paper book (default) or a live exchange mirrored by one (`venue.py`)."""

    def __init__(
        self,
        feed: PriceFeed,
        markets: MarketCatalog,
        config: ExecutionConfig,
        account_id: str,
        clock: Callable[[], datetime],
        live: BinanceUsdmExchange | None = None,
    ) -> None:
        self.feed = feed
        self.markets = markets
        self.config = config
        self.account_id = account_id
        self.clock = clock
        book = self._new_book(ZERO)
        self.venue: Venue = PaperVenue(book) if live is None else LiveVenue(live, book)
        self.name = self.venue.name
        self._open: dict[str, _Open] = {}  # by position id (str)
        self._by_trade: dict[uuid.UUID, str] = {}  # trade id -> position id, of the open positions
        self._exposure: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (Σ signed amount, Σ signed amount x entry)
        self.marks: dict[str, Decimal] = {}
        self.loaded = False  # the open positions were read from the tables
        self._atr_cache: dict[tuple[str, int], tuple[int, Decimal | None]] = {}
        self._harvest_policy: HarvestPolicy = AdaptiveHarvestPolicy()
        self._default_harvest = resolve_settings(self._harvest_policy, HarvestContext())
        self._reading_cache: dict[str, tuple[int, MarketReading | None]] = {}
        self._closes: dict[str, dict[int, float]] = {}  # symbol -> bar open time -> close, for the readings

    def _new_book(self, balance: Decimal) -> PaperBook:
        cfg = self.config
        return PaperBook(balance, PaperConfig(cfg.slippage_pct, cfg.taker_fee, cfg.maker_fee), self.clock)

    # --- state -------------------------------------------------------------------------------------
    async def load(self, session: AsyncSession, balance: Decimal) -> None:
        """Rebuild the book and the cache from the tables (on start, and after a failed batch)."""
        book = self._new_book(balance)
        cache: dict[str, _Open] = {}
        positions = (
            await session.execute(
                select(Position).where(Position.account_id == self.account_id, Position.status == "OPEN")
            )
        ).scalars()
        for p in positions:
            key = str(p.id)
            book.positions[key] = PaperPosition(
                key,
                p.symbol,
                "LONG" if p.side == "LONG" else "SHORT",
                p.amount,
                p.entry_price,
                p.leverage,
                p.margin,
                p.realized_pnl,
                p.fees,
                p.funding,
                opened_bar_ms=p.opened_bar_ms,
            )
            book.leverage[key] = p.leverage
            cache[key] = _Open(_row(p), trailing=_trailing_from(p.trailing), harvest=_harvest_from(p.harvest))
            self._harvest_position(cache[key])
        orders = (
            await session.execute(select(Order).where(Order.account_id == self.account_id, Order.status == "NEW"))
        ).scalars()
        legs = {
            leg.order_client_id: leg
            for leg in (await session.execute(select(ExitLegRecord).where(ExitLegRecord.status == "ACTIVE"))).scalars()
            if leg.order_client_id
        }
        for o in orders:
            request = _request(o)
            book.restore(OrderState(request, o.exchange_order_id, OrderStatus.NEW))
            owner = cache.get(str(o.position_id))
            if owner is not None:
                owner.orders[o.client_order_id] = _row(o)
                leg = legs.get(o.client_order_id)
                if leg is not None:
                    owner.legs[o.client_order_id] = _row(leg)
        book.recount_margin()
        self.venue.book, self._open, self.loaded = book, cache, True
        self._by_trade = {cached.row["trade_id"]: k for k, cached in cache.items()}
        self._exposure = {}
        for cached in cache.values():
            self._expose(cached.row, cached.row["amount"])

    @property
    def live(self) -> bool:
        return isinstance(self.venue, LiveVenue)

    @property
    def book(self) -> PaperBook:
        """The paper exchange, or the live exchange's local mirror."""
        return self.venue.book

    async def reconcile(self) -> ReadyState:
        """Live: compare the stored open orders and positions with the exchange's (trading waits for a
        clean result). Paper: the book is built from the tables, nothing to compare."""
        venue = self.venue
        if not isinstance(venue, LiveVenue):
            return venue.ready()
        orders = [o.request for o in self.book.open_orders()]
        held: dict[tuple[str, str], Decimal] = {}
        for cached in self._open.values():
            side_key = (cached.row["symbol"], cached.row["side"])
            held[side_key] = held.get(side_key, ZERO) + cached.row["amount"]
        positions = [
            ExpectedPosition(symbol, "LONG" if side == "LONG" else "SHORT", amount)
            for (symbol, side), amount in held.items()
        ]
        try:
            return await venue.reconcile(orders, positions)
        except ExchangeError as exc:
            logger.warning("reconciliation_failed", extra={"error": str(exc)})
            return venue.ready()

    @staticmethod
    def opened_view(rows: ExecRows, position: Row) -> OpenedView:
        """The rows `open` wrote for `position` in this batch (as they stand now)."""
        pid = position["id"]
        return OpenedView(
            {**position, "trailing": trailing_json(position["trailing"])},
            next(p for p in rows.plans if p["position_id"] == pid),
            [leg for leg in rows.new_legs if leg["position_id"] == pid],
            [o for o in rows.new_orders if o["position_id"] == pid],
        )

    async def poll_exchange(self, rows: ExecRows, now: datetime) -> list[Closed]:
        """Live: what the exchange did to the resting orders since the last look (fills of stops and
        targets between bars). Paper: nothing happens between bars."""
        if not isinstance(self.venue, LiveVenue):
            return []
        return await self._apply_events(rows, await self.venue.poll(now), now, None)

    def invalidate(self, reason: str) -> None:
        """A batch failed: the book is rebuilt from the tables; a live venue must be reconciled again."""
        if isinstance(self.venue, LiveVenue):
            self.venue.invalidate(reason)

    async def refresh_mark(self, symbol: str) -> Decimal:
        """The feed's price now, kept as the symbol's mark for the batch that follows."""
        mark = await self.feed.price(symbol)
        self.marks[symbol] = mark
        return mark

    async def atr(self, symbol: str, bars: int) -> Decimal | None:
        """The average true range of the last `bars` closed 1h bars (price units), or None without enough."""
        if bars <= 0:
            return None
        now_ms = int(self.feed.now().timestamp() * 1000)
        hour = now_ms // HOUR_MS  # the ATR changes only when a bar closes: once per hour and symbol
        cached = self._atr_cache.get((symbol, bars))
        if cached is not None and cached[0] == hour:
            return cached[1]
        try:
            closed = await self.feed.closed_bars(symbol, now_ms - (bars + 2) * HOUR_MS)
        except NoPrice:
            return None
        value: Decimal | None = None
        if len(closed) >= bars + 1:
            window = closed[-(bars + 1) :]
            ranges = [
                max(b.high - b.low, abs(b.high - prev.close), abs(b.low - prev.close))
                for prev, b in itertools.pairwise(window)
            ]
            value = sum(ranges, ZERO) / len(ranges)
        self._atr_cache[(symbol, bars)] = (hour, value)
        return value

    async def reading(self, symbol: str) -> MarketReading | None:
        """The market read at the last closed bar (regime, bias, trend strength), or None without enough
        history: once per symbol and closed bar."""
        now_ms = int(self.feed.now().timestamp() * 1000)
        hour = now_ms // HOUR_MS
        cached = self._reading_cache.get(symbol)
        if cached is not None and cached[0] == hour:
            return cached[1]
        try:
            history = await self.feed.closed_bars(symbol, now_ms - (READING_BARS + 2) * HOUR_MS)
        except NoPrice:
            return None
        found = read_market(symbol, history, [history[-1].open_ms]) if history else {}
        value = next(iter(found.values()), None)
        self._reading_cache[symbol] = (hour, value)
        return value

    async def readings(self, symbol: str, bars: list[Bar]) -> dict[int, MarketReading]:
        """The market read at each of `bars` (each from the bars up to it), for the monitor's batch."""
        if not bars:
            return {}
        try:
            history = await self.feed.closed_bars(symbol, bars[0].open_ms - (READING_BARS + 1) * HOUR_MS)
        except NoPrice:
            return {}
        if not history:
            return {}
        # Each close converted to float once per symbol and bar, not on every reading (~820 per reading).
        known = self._closes.setdefault(symbol, {})
        for bar in history:
            if bar.open_ms not in known:
                known[bar.open_ms] = float(bar.close)
        if len(known) > 2 * READING_BARS:  # older than any reading will ask for again
            oldest = history[0].open_ms
            for open_ms in [t for t in known if t < oldest]:
                del known[open_ms]
        opens = np.fromiter((b.open_ms for b in history), dtype=np.int64, count=len(history))
        closes = np.fromiter((known[b.open_ms] for b in history), dtype=np.float64, count=len(history))
        return read_closes(symbol, opens, closes, [b.open_ms for b in bars])

    def mark_for(self, symbol: str) -> Decimal:
        mark = self.marks.get(symbol)
        if mark is None:
            raise ValueError(f"no mark for {symbol}: refresh_mark first")
        return mark

    def position_of(self, trade_id: uuid.UUID) -> Row | None:
        """The open position a trade opened (None once it is closed)."""
        key = self._by_trade.get(trade_id)
        cached = self._open.get(key) if key is not None else None
        return cached.row if cached is not None else None

    def open_rows(self) -> list[Row]:
        return [o.row for o in self._open.values()]

    def symbols(self) -> set[str]:
        return {o.row["symbol"] for o in self._open.values()}

    def unrealized(self) -> Decimal:
        """Σ unrealized PnL of the open positions at the latest marks (0 for a symbol without one): from
        per-symbol sums kept as positions change, so a check reads it in O(symbols), not O(positions)."""
        total = ZERO
        for symbol, (qty, cost) in self._exposure.items():
            mark = self.marks.get(symbol)
            if mark is not None:
                total += mark * qty - cost
        return total

    def _expose(self, row: Row, amount: Decimal) -> None:
        """`amount` contracts of `row` opened (> 0) or closed (< 0): the per-symbol sums follow."""
        signed = amount if row["side"] == "LONG" else -amount
        qty, cost = self._exposure.get(row["symbol"], (ZERO, ZERO))
        self._exposure[row["symbol"]] = (qty + signed, cost + signed * row["entry_price"])

    def cursor(self, symbol: str) -> int | None:
        """The open time of the last bar applied to `symbol`'s open positions."""
        cursors = [o.row["last_bar_ms"] for o in self._open.values() if o.row["symbol"] == symbol]
        known = [c for c in cursors if c is not None]
        return min(known) if known else None

    # --- open --------------------------------------------------------------------------------------
    def plan_for(
        self,
        symbol: str,
        side: str,
        amount: Decimal,
        leverage: Decimal,
        mark: Decimal,
        stop: Decimal | None,
        policy: str | None,
        atr: Decimal | None = None,
        regime: str | None = None,
    ) -> ExitPlan | PlanRefused:
        """The exit plan for an entry filled at the price the book will give it (validated before any order):
        the dynamic one when the feed gave an ATR (its targets scaled by the regime at entry), else the
        default ladder."""
        order_side = OrderSide.BUY if side == "LONG" else OrderSide.SELL
        entry = self.venue.expected_fill(symbol, order_side, mark)
        context = ExitContext(
            side,
            entry,
            amount,
            leverage,
            symbol,
            atr=atr,
            regime=regime if atr is not None else None,
            policy=policy,
            wallet_balance=entry * amount / leverage,
        )
        plan = build_plan(context, self.config.exit)
        if isinstance(plan, PlanRefused) or stop is None:
            return plan
        given = price_to_precision(symbol, stop)
        sign = 1 if side == "LONG" else -1
        if sign * (entry - given) <= 0:
            return PlanRefused(f"stop_loss {given} is not on the loss side of the entry {entry} for a {side}")
        if plan.stop_bound is not None and sign * (given - plan.stop_bound) <= 0:
            return PlanRefused(f"stop_loss {given} lies at or beyond liquidation + buffer ({plan.stop_bound:.8g})")
        legs = tuple(
            replace(leg, trigger_price=given, reason="stop_loss as given") if leg.kind is LegKind.SL else leg
            for leg in plan.legs
        )
        return replace(plan, legs=legs)

    async def open(
        self,
        rows: ExecRows,
        trade: Row,
        plan: ExitPlan,
        mark: Decimal,
        now: datetime,
        balance: Decimal,
        reading: MarketReading | None = None,
    ) -> Opened:
        """Fill the entry at the market and place the plan's protective orders (reduce-only)."""
        self.book.balance = balance
        symbol = trade["symbol"]
        position_id = uuid.uuid4()
        key = str(position_id)
        self.book.leverage[key] = trade["leverage"]
        entry_side = _side_of(trade["side"], closing=False)
        request = OrderRequest(
            f"{key[:8]}-entry-{trade['id'].hex[:12]}",
            symbol,
            entry_side,
            OrderType.MARKET,
            trade["quantity"],
            position_id=key,
        )
        state, events = await self.venue.submit(request, mark)
        fill = events[0].fill
        assert fill is not None and state.status is OrderStatus.FILLED
        book_position = self.book.positions[key]
        # The fill is the price as of the last closed bar: the position enters at the open of the bar in
        # progress on the feed's clock (simulated for the replay), and is monitored from that bar on.
        entry_bar_ms = int(self.feed.now().timestamp() * 1000) // HOUR_MS * HOUR_MS
        book_position.opened_bar_ms = entry_bar_ms
        position: Row = {
            "id": position_id,
            "account_id": self.account_id,
            "trade_id": trade["id"],
            "exchange": self.name,
            "symbol": symbol,
            "side": trade["side"],
            "status": "OPEN",
            "leverage": trade["leverage"],
            "initial_amount": fill.amount,
            "amount": fill.amount,
            "entry_price": fill.price,
            "margin": book_position.margin,
            "realized_pnl": -fill.fee,
            "fees": fill.fee,
            "funding": ZERO,
            "stop_price": plan.stop_loss.trigger_price,
            "initial_stop": plan.stop_loss.trigger_price,  # the risk R is measured against (harvest)
            # the market read at entry: the kill score measures the regime flip and trend drop from it
            "harvest": {"fired": [], "peak_r": 0.0, "entry": reading.as_json() if reading is not None else None},
            "liquidation_price": _shown(symbol, book_position.liquidation()),
            "trailing": None,
            "last_bar_ms": entry_bar_ms - HOUR_MS,  # the bars from the entry's on are applied to it
            "opened_bar_ms": entry_bar_ms,
            "opened_at": now,
            "closed_at": None,
            "close_reason": None,
        }
        cached = _Open(position)
        self._harvest_position(cached)  # fixed at entry: built here, not on the monitor's path
        self._open[key] = cached
        self._by_trade[trade["id"]] = key
        self._expose(position, fill.amount)
        rows.cash -= fill.fee
        rows.notional += fill.amount * fill.price
        rows.margin += fill.amount * fill.price / trade["leverage"]
        rows.new_positions.append(position)
        entry_order = self._order_row(state, position_id, "ENTRY", None, None, now)
        rows.new_orders.append(entry_order)
        rows.fills.append(self._fill_row(entry_order, position_id, fill, -fill.fee, None))
        plan_id = uuid.uuid4()
        rows.plans.append(
            {
                "id": plan_id,
                "position_id": position_id,
                "style": self.config.exit.style.value,
                "entry_price": plan.entry_price,
                "liquidation_price": plan.liquidation_price,
                "stop_bound": plan.stop_bound,
                "notes": list(plan.notes),
                "created_at": now,
            }
        )
        unprotected: ExchangeError | None = None
        for seq, leg in enumerate(plan.legs):
            client_id = None
            if leg.kind is not LegKind.TRAILING and unprotected is None:
                order_type = OrderType.STOP_MARKET if leg.kind is LegKind.SL else OrderType.TAKE_PROFIT_MARKET
                client_id = f"{key[:8]}-{leg.kind.value.lower()}{seq}-{uuid.uuid4().hex[:12]}"
                protective = OrderRequest(
                    client_id,
                    symbol,
                    _side_of(trade["side"], closing=True),
                    order_type,
                    leg.quantity,
                    stop_price=leg.trigger_price,
                    reduce_only=True,
                    position_id=key,
                )
                try:
                    resting, _ = await self.venue.submit(protective, mark)
                except ExchangeError as exc:  # never left unprotected: closed below
                    unprotected, client_id = exc, None
                else:
                    order = self._order_row(resting, position_id, leg.kind.value, None, "exit_plan", now)
                    rows.new_orders.append(order)
                    cached.orders[client_id] = order
            leg_row = {
                "id": uuid.uuid4(),
                "plan_id": plan_id,
                "position_id": position_id,
                "seq": seq,
                "kind": leg.kind.value,
                "trigger_price": leg.trigger_price,
                "fraction": leg.fraction,
                "quantity": leg.quantity,
                "reason": leg.reason,
                "status": "ACTIVE" if client_id is not None or leg.kind is LegKind.TRAILING else "NOT_PLACED",
                "order_client_id": client_id,
                "updated_at": now,
            }
            rows.new_legs.append(leg_row)
            if client_id is not None:
                cached.legs[client_id] = leg_row
        trailing = TrailingStop(
            side="LONG" if trade["side"] == "LONG" else "SHORT",
            entry_price=fill.price,
            activation=Decimal(str(self.config.exit.trail_activation)),
            distance=Decimal(str(self.config.exit.trail_distance)),
        )
        position["trailing"] = trailing
        cached.trailing = trailing
        closed: list[Closed] = []
        if unprotected is not None:
            reason = f"the exchange refused a protective order ({unprotected}): closed rather than left unprotected"
            logger.error("protective_order_refused", extra={"position_id": key, "error": str(unprotected)})
            rows.events.append(self._event(position, "protection_failed", "EMERGENCY", reason, None, None, None, now))
            proposal = ExitProposal(ExitSource.EMERGENCY, ExitKind.CLOSE, reason)
            try:
                closed = await self._execute(rows, cached, [proposal], mark, now, None)
            except ExchangeError as exc:  # open, unprotected and not closable: the batch must not pretend
                raise ExchangeStateUnknown(f"position {key} is open without protection: {exc}") from exc
        return Opened(position, plan, fill.price, fill.amount, fill.fee, tuple(closed))

    # --- close -------------------------------------------------------------------------------------
    async def close(
        self,
        rows: ExecRows,
        position_id: str,
        mark: Decimal,
        now: datetime,
        *,
        amount: Decimal | None,
        source: ExitSource,
        reason: str,
    ) -> list[Closed]:
        """A close (all, or `amount` contracts) through the arbiter, filled at the market."""
        cached = self._open.get(position_id)
        if cached is None:
            return []
        proposal = (
            ExitProposal(source, ExitKind.CLOSE, reason)
            if amount is None
            else ExitProposal(source, ExitKind.REDUCE, reason, amount=amount)
        )
        return await self._execute(rows, cached, [proposal], mark, now, None)

    # --- bars --------------------------------------------------------------------------------------
    async def apply_bar(
        self,
        rows: ExecRows,
        bar: Bar,
        funding_rate: Decimal | None,
        now: datetime,
        reading: MarketReading | None = None,
        exposure: float = 0.0,
    ) -> list[Closed]:
        """Everything `bar` does to the open positions of its symbol, then the trailing stops."""
        self.marks[bar.symbol] = bar.close
        targets = {k: o for k, o in self._open.items() if o.row["symbol"] == bar.symbol}
        fresh = {k for k, o in targets.items() if o.row["last_bar_ms"] is None or o.row["last_bar_ms"] < bar.open_ms}
        if not fresh:
            return []
        closed = await self._apply_events(rows, await self.venue.on_bar(bar, funding_rate), now, bar.open_ms)
        settings = self._default_harvest  # theta and K_CLOSE for this bar: one context for the symbol's book
        if reading is not None:
            settings = resolve_settings(
                self._harvest_policy, HarvestContext(reading.regime, reading.volatility_ratio, exposure)
            )
        for key in fresh:
            cached = self._open.get(key)
            if cached is None:
                continue
            cached.row["last_bar_ms"] = bar.open_ms
            rows.positions[cached.row["id"]] = cached.row
            closed += await self._manage(rows, cached, bar, now, reading, settings)
        return closed

    async def _manage(
        self,
        rows: ExecRows,
        cached: _Open,
        bar: Bar,
        now: datetime,
        reading: MarketReading | None,
        settings: HarvestSettings,
    ) -> list[Closed]:
        """After the bar: the trailing stop follows its best price and harvest proposes partials and the
        break-even stop; all of it goes through the arbiter in one round (the stop before harvest)."""
        proposals = self._trailing_proposals(rows, cached, bar) + self._harvest_proposals(
            rows, cached, bar, reading, settings
        )
        if not proposals:
            return []
        return await self._execute(rows, cached, proposals, bar.close, now, bar.open_ms)

    def _trailing_proposals(self, rows: ExecRows, cached: _Open, bar: Bar) -> list[ExitProposal]:
        row = cached.row
        state = cached.trailing
        if state is None:
            return []
        best = bar.high if row["side"] == "LONG" else bar.low
        moved = state.update(best)
        if moved is state:
            return []
        cached.trailing = moved
        row["trailing"] = moved  # serialized when the row is written
        rows.positions[row["id"]] = row
        if moved.stop_price is None or moved.stop_price == state.stop_price:
            return []
        stop = price_to_precision(row["symbol"], moved.stop_price)
        crossed = stop >= bar.close if row["side"] == "LONG" else stop <= bar.close
        if crossed:  # the bar reached the best price and fell back through the new stop: it has fired
            return [
                ExitProposal(
                    ExitSource.STOP,
                    ExitKind.CLOSE,
                    f"trailing stop {stop} ({moved.distance} behind the best {moved.best_price}) crossed within "
                    f"the bar; closed at its close {bar.close}",
                )
            ]
        return [
            ExitProposal(
                ExitSource.STOP,
                ExitKind.MOVE_STOP,
                f"trailing stop: best {moved.best_price}, {moved.distance} behind",
                stop=stop,
            )
        ]

    def _harvest_proposals(
        self, rows: ExecRows, cached: _Open, bar: Bar, reading: MarketReading | None, settings: HarvestSettings
    ) -> list[ExitProposal]:
        """Partials at T1/T2/T3 R (down to 75/50/25 % of the entry amount, never below what the take-profits
        left) and the break-even-plus-fees stop at lock R; with a market reading of this bar and one from the
        entry, the kill score (FULL_CLOSE_PROPOSED at kill_threshold) and the heat gate (close at K_CLOSE).
        Theta and K_CLOSE come from the adaptive policy for the bar's regime, volatility and the book's
        exposure (bounded by `resolve_settings`)."""
        row = cached.row
        position = cached.harvest_position or self._harvest_position(cached)
        if position is None:
            return []
        entry = (row.get("harvest") or {}).get("entry")
        market = reading.view if reading is not None and entry else None
        mark = float(bar.close)
        out: list[ExitProposal] = []
        kill = None
        if market is not None and HarvestAction.FULL_CLOSE_PROPOSED not in cached.harvest.fired:
            r = r_multiple(position, mark)
            kill = kill_score(
                side=position.side,
                bias_at_entry=position.bias_at_entry,
                bias_now=market.bias,
                trend_at_entry=position.trend_at_entry,
                trend_now=market.trend_strength,
                peak_r=max(cached.harvest.peak_r, r),
                r_now=r,
            )
            # K_CLOSE is bounded already (resolve_settings): the gate's own check runs only when it may close
            heat = heat_gate(kill.score, settings.k_close) if kill.score >= settings.k_close - 1e-9 else None
            if heat is not None and heat.close:
                why = (
                    f"heat gate: {heat.reason} (regime_flip {kill.regime_flip:.2f}, trend_drop {kill.trend_drop:.2f}, "
                    f"pnl_giveback {kill.pnl_giveback:.2f}; {reading.regime.value if reading else ''})"
                )
                out.append(ExitProposal(ExitSource.HEAT_GATE, ExitKind.CLOSE, why))
        found, state = propose(position, mark, settings.theta, cached.harvest, market=market, kill=kill)
        if state != cached.harvest:
            cached.harvest = state
            row["harvest"] = {"fired": sorted(a.value for a in state.fired), "peak_r": state.peak_r, "entry": entry}
            rows.positions[row["id"]] = row
        for p in found:
            if p.action is HarvestAction.UPDATE_SL and p.new_stop is not None:
                stop = price_to_precision(row["symbol"], Decimal(repr(p.new_stop)))
                out.append(ExitProposal(ExitSource.HARVEST, ExitKind.MOVE_STOP, p.reason, stop=stop))
            elif p.remaining_fraction is not None and p.action is not HarvestAction.FULL_CLOSE_PROPOSED:
                keep = row["initial_amount"] * Decimal(repr(p.remaining_fraction))
                amount = row["amount"] - keep
                if amount > 0:
                    amount = amount_to_precision(row["symbol"], amount) if amount >= self._min_step(row) else amount
                    out.append(ExitProposal(ExitSource.HARVEST, ExitKind.REDUCE, p.reason, amount=amount))
            elif p.action is HarvestAction.FULL_CLOSE_PROPOSED:
                out.append(ExitProposal(ExitSource.HARVEST, ExitKind.CLOSE, p.reason))
        return out

    def _harvest_position(self, cached: _Open) -> HarvestPosition | None:
        """What harvest knows of the position (fixed from its entry: built once)."""
        row = cached.row
        if row.get("initial_stop") is None:
            return None
        entry = (row.get("harvest") or {}).get("entry")
        cached.harvest_position = HarvestPosition(
            side=Side(row["side"]),
            entry_price=float(row["entry_price"]),
            initial_stop=float(row["initial_stop"]),
            amount=float(row["initial_amount"]),
            taker_fee_rate=float(self.config.taker_fee),
            bias_at_entry=Bias(entry["bias"]) if entry else Bias.NEUTRAL,
            trend_at_entry=float(entry["trend_strength"]) if entry else 0.0,
        )
        return cached.harvest_position

    def _min_step(self, row: Row) -> Decimal:
        return self.markets.resolve(row["symbol"]).amount_step

    # --- the arbiter and the book ------------------------------------------------------------------------
    async def _execute(
        self,
        rows: ExecRows,
        cached: _Open,
        proposals: list[ExitProposal],
        mark: Decimal,
        now: datetime,
        bar_ms: int | None,
    ) -> list[Closed]:
        row = cached.row
        market = self.markets.resolve(row["symbol"])
        view = PositionView(row["side"], row["amount"], mark, row["stop_price"], market.min_amount)
        decision = arbitrate(view, proposals)
        for refusal in decision.refused:
            rows.events.append(
                self._event(row, "arbiter_refused", refusal.proposal.source.name, refusal.why, None, None, bar_ms, now)
            )
        closed: list[Closed] = []
        key = str(row["id"])
        for action in decision.actions:
            rows.events.append(
                self._event(
                    row,
                    f"arbiter_{action.kind.value.lower()}",
                    action.source.name,
                    action.reason,
                    action.amount or None,
                    None,
                    bar_ms,
                    now,
                )
            )
            if action.kind is ExitKind.MOVE_STOP:
                assert action.stop is not None
                await self._move_stop(rows, cached, action.stop, now)
                continue
            request = OrderRequest(
                f"{key[:8]}-{action.kind.value.lower()}-{uuid.uuid4().hex[:12]}",
                row["symbol"],
                _side_of(row["side"], closing=True),
                OrderType.MARKET,
                action.amount,
                reduce_only=True,
                position_id=key,
            )
            try:
                state, events = await self.venue.submit(request, mark)
            except ExchangeError as exc:  # nothing happened: the action's event says it was refused, and why
                refused = rows.events.pop()
                why = f"the exchange refused it: {exc}"
                refused.update(kind=f"exchange_refused_{action.kind.value.lower()}", detail=f"{action.reason}; {why}")
                rows.events.append(refused)
                raise
            rows.new_orders.append(
                self._order_row(state, row["id"], action.kind.value, None, action.source.name, now, action.reason)
            )
            closed += await self._apply_events(rows, events, now, bar_ms, order_row=rows.new_orders[-1])
        return closed

    async def _move_stop(self, rows: ExecRows, cached: _Open, stop: Decimal, now: datetime) -> None:
        """The new stop order is placed first and the old one canceled after, so the position is never
        without a stop: a refused new stop keeps the old one, and an old one that cannot be canceled stays
        tracked (reduce-only caps both at the position). Each failure is a position event."""
        row = cached.row
        for client_id, order in list(cached.orders.items()):
            if order["purpose"] != "SL":
                continue
            new_id = f"{str(row['id'])[:8]}-sl-{uuid.uuid4().hex[:12]}"
            request = OrderRequest(
                new_id,
                row["symbol"],
                _side_of(row["side"], closing=True),
                OrderType.STOP_MARKET,
                row["amount"],
                stop_price=stop,
                reduce_only=True,
                position_id=str(row["id"]),
            )
            try:
                state, _ = await self.venue.submit(request, stop)
            except ExchangeError as exc:
                why = f"the exchange refused the stop at {stop} ({exc}); the stop at {order['stop_price']} stays"
                rows.events.append(
                    self._event(row, "stop_move_failed", ExitSource.STOP.name, why, None, None, None, now)
                )
                return
            new_order = self._order_row(state, row["id"], "SL", None, ExitSource.STOP.name, now)
            rows.new_orders.append(new_order)
            cached.orders[new_id] = new_order
            leg = cached.legs.pop(client_id, None)
            if leg is not None:
                leg.update(trigger_price=stop, order_client_id=new_id, updated_at=now)
                rows.legs[leg["id"]] = leg
                cached.legs[new_id] = leg
            try:
                await self.venue.cancel(client_id)
            except ExchangeError as exc:
                why = f"the replaced stop {client_id} could not be canceled ({exc}); it stays tracked"
                rows.events.append(self._event(row, "cancel_failed", ExitSource.STOP.name, why, None, None, None, now))
                continue
            order.update(status=OrderStatus.CANCELED.value, reason=f"replaced by a stop at {stop}", updated_at=now)
            rows.orders[client_id] = order
            del cached.orders[client_id]
        row["stop_price"] = stop
        rows.positions[row["id"]] = row

    async def _apply_events(
        self,
        rows: ExecRows,
        events: list[BookEvent],
        now: datetime,
        bar_ms: int | None,
        order_row: Row | None = None,
    ) -> list[Closed]:
        closed: list[Closed] = []
        for event in events:
            key = event.position_id or (str(order_row["position_id"]) if order_row else None)
            cached = self._open.get(key) if key else None
            if event.kind == "expired":
                assert event.order is not None
                self._order_done(rows, event.order, now, cached)
                continue
            if cached is None:
                continue
            row = cached.row
            entry, leverage = row["entry_price"], row["leverage"]
            if event.kind == "funding":
                rows.cash += event.realized_pnl
                row["funding"] += event.realized_pnl
                row["realized_pnl"] += event.realized_pnl
                row["margin"] += event.realized_pnl
                rows.events.append(
                    self._event(row, "funding", None, event.detail, event.amount, event.realized_pnl, bar_ms, now)
                )
            elif event.kind == "liquidation":
                self._expose(row, -event.amount)
                rows.cash += event.realized_pnl
                rows.notional -= event.amount * entry
                rows.margin -= event.amount * entry / leverage
                row["realized_pnl"] += event.realized_pnl
                rows.events.append(
                    self._event(
                        row, "liquidation", "LIQUIDATION", event.detail, event.amount, event.realized_pnl, bar_ms, now
                    )
                )
                closed.append(await self._finish(rows, cached, "LIQUIDATED", event.detail, now, liquidated=True))
                continue
            elif event.kind == "fill":
                assert event.fill is not None and event.order is not None
                fill = event.fill
                order = self._order_done(rows, event.order, now, cached) or order_row
                assert order is not None
                rows.fills.append(self._fill_row(order, row["id"], fill, event.realized_pnl, bar_ms))
                self._expose(row, -fill.amount)
                rows.cash += event.realized_pnl
                rows.notional -= fill.amount * entry
                rows.margin -= fill.amount * entry / leverage
                row["amount"] -= fill.amount
                row["fees"] += fill.fee
                row["realized_pnl"] += event.realized_pnl
                cached.closing_value += fill.price * fill.amount
                cached.closing_fees += fill.fee
                book_position = self.book.positions.get(str(row["id"]))
                row["margin"] = book_position.margin if book_position is not None else ZERO
                if book_position is not None:
                    row["liquidation_price"] = _shown(row["symbol"], book_position.liquidation())
                if row["amount"] <= 0:
                    closed.append(
                        await self._finish(rows, cached, "CLOSED", order.get("reason") or order["purpose"], now)
                    )
                    continue
                await self._resize_stop(rows, cached, now)
            rows.positions[row["id"]] = row
        return closed

    async def _resize_stop(self, rows: ExecRows, cached: _Open, now: datetime) -> None:
        """After a partial close the stop covers what is left (reduce-only would cut it anyway). The
        book has already played the whole bar: a stop it no longer holds is reported by a later event."""
        row = cached.row
        if not self.venue.amends:
            return  # live: reduce-only caps the stop at what is left on the exchange
        for client_id, order in cached.orders.items():
            if order["purpose"] == "SL" and order["amount"] > row["amount"] and self.book.resting(client_id):
                await self.venue.amend(client_id, row["amount"])
                order.update(amount=row["amount"], updated_at=now)
                rows.orders[client_id] = order

    def _order_done(self, rows: ExecRows, state: OrderState, now: datetime, cached: _Open | None) -> Row | None:
        client_id = state.request.client_order_id
        order = cached.orders.pop(client_id, None) if cached is not None else None
        if order is None:
            order = next((r for r in rows.new_orders if r["client_order_id"] == client_id), None)
            if order is None:
                return None
        order.update(
            status=state.status.value,
            filled=state.filled,
            average_price=state.average_price,
            reason=state.reason or order.get("reason"),
            updated_at=now,
        )
        if order not in rows.new_orders:
            rows.orders[client_id] = order
        leg = cached.legs.pop(client_id, None) if cached is not None else None
        if leg is not None:
            leg.update(status="FILLED" if state.status is OrderStatus.FILLED else state.status.value, updated_at=now)
            rows.legs[leg["id"]] = leg
        return order

    async def _finish(
        self, rows: ExecRows, cached: _Open, status: str, reason: str, now: datetime, *, liquidated: bool = False
    ) -> Closed:
        row = cached.row
        key = str(row["id"])
        for client_id in list(cached.orders):
            try:
                state = await self.venue.cancel(client_id)
            except ExchangeError as exc:  # live: left to reduce-only (nothing to reduce) and reconciliation
                logger.warning("cancel_failed", extra={"client_order_id": client_id, "error": str(exc)})
                cached.orders.pop(client_id, None)
                continue
            if state.status is OrderStatus.NEW:  # already done in the book (expired with the position)
                state = replace(state, status=OrderStatus.CANCELED, reason="position closed")
            self._order_done(rows, state, now, cached)
        for leg in cached.legs.values():
            leg.update(status="CANCELED", updated_at=now)
            rows.legs[leg["id"]] = leg
        amount_closed = row["initial_amount"]
        if liquidated:
            exit_price = row["liquidation_price"] or row["entry_price"]
            exit_fee = cached.closing_fees
        else:
            closed_amount = amount_closed if cached.closing_value else Decimal(1)
            exit_price = (cached.closing_value / closed_amount).quantize(USDT)
            exit_fee = cached.closing_fees
        row.update(status=status, amount=ZERO, margin=ZERO, closed_at=now, close_reason=reason)
        rows.positions[row["id"]] = row
        self._open.pop(key, None)
        self._by_trade.pop(row["trade_id"], None)
        return Closed(row, exit_price, exit_fee, reason)

    # --- rows ----------------------------------------------------------------------------------------
    def _order_row(
        self,
        state: OrderState,
        position_id: uuid.UUID,
        purpose: str,
        leg_id: uuid.UUID | None,
        source: str | None,
        now: datetime,
        reason: str | None = None,
    ) -> Row:
        r = state.request
        return {
            "id": uuid.uuid4(),
            "account_id": self.account_id,
            "position_id": position_id,
            "client_order_id": r.client_order_id,
            "exchange_order_id": state.exchange_order_id,
            "symbol": r.symbol,
            "side": r.side.value,
            "type": r.type.value,
            "purpose": purpose,
            "amount": r.amount,
            "price": r.price,
            "stop_price": r.stop_price,
            "reduce_only": r.reduce_only,
            "status": state.status.value,
            "filled": state.filled,
            "average_price": state.average_price,
            "leg_id": leg_id,
            "source": source,
            "reason": reason or state.reason,
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    def _fill_row(order: Row, position_id: uuid.UUID, fill: Any, realized: Decimal, bar_ms: int | None) -> Row:
        return {
            "id": uuid.uuid4(),
            "order_id": order["id"],
            "position_id": position_id,
            "price": fill.price,
            "amount": fill.amount,
            "fee": fill.fee,
            "maker": fill.maker,
            "realized_pnl": realized,
            "filled_at": fill.at,
            "bar_ms": bar_ms,
        }

    @staticmethod
    def _event(
        row: Row,
        kind: str,
        source: str | None,
        detail: str,
        amount: Decimal | None,
        realized: Decimal | None,
        bar_ms: int | None,
        now: datetime,
    ) -> Row:
        return {
            "position_id": row["id"],
            "kind": kind,
            "source": source,
            "detail": detail,
            "amount": amount,
            "realized_pnl": realized,
            "bar_ms": bar_ms,
            "created_at": now,
        }


def _row(record: Any) -> Row:
    return {c.name: getattr(record, c.name) for c in record.__table__.columns}


def _request(o: Order) -> OrderRequest:
    return OrderRequest(
        o.client_order_id,
        o.symbol,
        OrderSide(o.side),
        OrderType(o.type),
        o.amount,
        price=o.price,
        stop_price=o.stop_price,
        reduce_only=o.reduce_only,
        position_id=str(o.position_id) if o.position_id else None,
    )


def trailing_json(t: TrailingStop | dict[str, Any] | None) -> dict[str, Any] | None:
    """The trailing stop as stored (a row may hold the state object until it is written)."""
    return _trailing_json(t) if isinstance(t, TrailingStop) else t


def _trailing_json(t: TrailingStop) -> dict[str, str | None]:
    return {
        "side": t.side,
        "entry_price": str(t.entry_price),
        "activation": str(t.activation),
        "distance": str(t.distance),
        "best_price": None if t.best_price is None else str(t.best_price),
        "stop_price": None if t.stop_price is None else str(t.stop_price),
    }


def _shown(symbol: str, price: Decimal | None) -> Decimal | None:
    """A liquidation price as stored and shown: at the market's tick (the book keeps the exact one)."""
    return None if price is None else price_to_precision(symbol, price)


def _harvest_from(data: Any) -> HarvestState:
    if not data:
        return HarvestState()
    return HarvestState(frozenset(HarvestAction(a) for a in data["fired"]), float(data["peak_r"]))


def _trailing_from(data: Any) -> TrailingStop | None:
    if not data:
        return None
    return TrailingStop(
        side="LONG" if data["side"] == "LONG" else "SHORT",
        entry_price=Decimal(data["entry_price"]),
        activation=Decimal(data["activation"]),
        distance=Decimal(data["distance"]),
        best_price=Decimal(data["best_price"]) if data.get("best_price") else None,
        stop_price=Decimal(data["stop_price"]) if data.get("stop_price") else None,
    )
