"""Binance USDⓈ-M perpetuals through ccxt (async): the live implementation of the `Exchange` interface.

- Markets come from the app's bundled ccxt metadata (`app/domains/markets/data/binance_usdm_swaps.json`,
  precision in decimal places, so ccxt runs in `DECIMAL_PLACES` mode). `load_markets()` is never called:
  the adapter does not need Binance to tell it the rules. The bundled slice has no raw `info`; ccxt checks an
  order's type against `info.orderTypes`, so the list every USDⓈ-M perpetual publishes is supplied.
- Amounts and prices are rounded by ccxt (`amount_to_precision` / `price_to_precision`), never re-implemented.
  An order whose amount or trigger is not already at the market's precision is refused rather than silently
  moved: a stop that ccxt would round is a stop somewhere the exit plan did not put it.
- Entry orders go to `POST /fapi/v1/order`. STOP_MARKET / TAKE_PROFIT_MARKET reduce-only protective orders are
  passed to ccxt as `{"stopPrice": ..., "reduceOnly": True, "newClientOrderId": ...}`; ccxt (4.5.x) sends them,
  as Binance now requires for conditional orders, to the algo-order endpoint `POST /fapi/v1/algoOrder` with
  `algoType=CONDITIONAL`, `triggerPrice` and `clientAlgoId` (the client order id).
- Client order ids make orders idempotent: a duplicate-id rejection (Binance -4116, or -20132 for algo orders)
  returns the existing order. That also makes retrying an order after a timeout safe.
- Transient failures (ccxt `NetworkError`: timeouts, unavailable, DDoS protection / rate limits) are retried with
  exponential backoff, a bounded number of times; rejections never are. ccxt's own rate limiter is on.
- `testnet=True` uses Binance's demo-trading environment (`demo-fapi.binance.com`): ccxt no longer supports the
  old futures sandbox (`testnet.binancefuture.com`; its `set_sandbox_mode` makes every private call fail with
  NotSupported) and points to demo trading instead.
- Until `reconcile()` has compared the exchange with what the database expects and found them equal,
  `ready.reconciled` is False and orders that could open or increase a position are refused (`NotReconciled`).
  Reduce-only orders, cancels and queries stay allowed, so protection can be repaired.
"""

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import ccxt
import ccxt.async_support as ccxt_async

from app.domains.execution.exchange import (
    ExchangeError,
    ExchangePosition,
    ExchangeUnavailable,
    InsufficientMargin,
    InvalidOrder,
    MarginMode,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
    RateLimited,
)
from app.domains.markets.catalog import BUNDLED

logger = logging.getLogger(__name__)

# Binance's exchangeInfo `orderTypes` for every USDⓈ-M perpetual (the same for all seven bundled markets).
USDM_ORDER_TYPES = (
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
)
_CONDITIONAL_TYPES = frozenset({OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET})

# Binance error codes that decide more than ccxt's exception class does.
_DUPLICATE_CLIENT_ID = frozenset({"-4116", "-20132"})  # DUPLICATED_CLIENT_ORDER_ID, "The client algo id is duplicated"
_NOT_FOUND = frozenset({"-2011", "-2013", "-20124"})  # unknown order sent, order does not exist, invalid algo id
_INSUFFICIENT_MARGIN = frozenset({"-2018", "-2019"})  # balance insufficient, margin insufficient
_CODE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_SIGNATURE = re.compile(r"signature=[0-9A-Za-z%+/=_-]*")

# Binance order statuses (regular and algo) → the app's.
_STATUSES: dict[str, OrderStatus] = {
    "NEW": OrderStatus.NEW,
    "ACCEPTED": OrderStatus.NEW,
    "TRIGGERING": OrderStatus.NEW,  # algo: the trigger fired, its market order is being sent
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "TRIGGERED": OrderStatus.FILLED,  # algo: triggered, the market order was placed
    "FINISHED": OrderStatus.FILLED,  # algo: triggered and done
    "CANCELED": OrderStatus.CANCELED,
    "CANCELLED": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}
_OPEN_STATUSES = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})


class NotReconciled(ExchangeError):
    """The adapter has not (successfully) reconciled with the database: it refuses to open positions."""


class _DuplicateClientOrderId(InvalidOrder):
    pass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per call (the first included) and the exponential backoff between them, in seconds."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    def delay(self, failed_attempts: int) -> float:
        """The pause after the n-th failed attempt: base, 2·base, 4·base, … capped at max_delay."""
        return float(min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1)))


@dataclass(frozen=True, slots=True)
class ExpectedOrder:
    """An order the database believes is open on the exchange."""

    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None = None  # LIMIT only
    stop_price: Decimal | None = None  # STOP_MARKET / TAKE_PROFIT_MARKET trigger
    reduce_only: bool = False

    @classmethod
    def from_request(cls, request: OrderRequest) -> "ExpectedOrder":
        return cls(
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            amount=request.amount,
            price=request.price,
            stop_price=request.stop_price,
            reduce_only=request.reduce_only,
        )


@dataclass(frozen=True, slots=True)
class ExpectedPosition:
    """A position the database believes is open."""

    symbol: str
    side: Literal["LONG", "SHORT"]
    amount: Decimal


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    """An open order as the exchange reports it, including types this app never places (e.g. trailing stops)."""

    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: OrderSide
    type: str  # Binance's order type, e.g. STOP_MARKET, TRAILING_STOP_MARKET
    amount: Decimal
    stop_price: Decimal | None
    price: Decimal | None
    reduce_only: bool
    status: OrderStatus
    conditional: bool  # an algo (conditional) order


@dataclass(frozen=True, slots=True)
class MissingOrder:
    expected: ExpectedOrder
    exchange_state: OrderState | None  # what became of it (filled, canceled…), None when the exchange never had it

    def describe(self) -> str:
        fate = "unknown to the exchange" if self.exchange_state is None else self.exchange_state.status.value
        return (
            f"{self.expected.client_order_id} ({self.expected.type.value} {self.expected.side.value} "
            f"{self.expected.amount} {self.expected.symbol}) is not open: {fate}"
        )


@dataclass(frozen=True, slots=True)
class OrderMismatch:
    expected: ExpectedOrder
    actual: ExchangeOrder
    differences: tuple[str, ...]  # "amount: expected 0.002, exchange 0.001"

    def describe(self) -> str:
        return f"{self.expected.client_order_id}: " + "; ".join(self.differences)


@dataclass(frozen=True, slots=True)
class PositionMismatch:
    expected: ExpectedPosition
    actual: ExchangePosition
    differences: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.expected.symbol} {self.expected.side}: " + "; ".join(self.differences)


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    checked_at: datetime
    missing_orders: tuple[MissingOrder, ...] = ()  # expected open, not open on the exchange
    unknown_orders: tuple[ExchangeOrder, ...] = ()  # open on the exchange, not expected
    mismatched_orders: tuple[OrderMismatch, ...] = ()
    missing_positions: tuple[ExpectedPosition, ...] = ()
    unknown_positions: tuple[ExchangePosition, ...] = ()
    mismatched_positions: tuple[PositionMismatch, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        lines = [f"missing order {m.describe()}" for m in self.missing_orders]
        lines += [
            f"unknown order {o.client_order_id} ({o.type} {o.side.value} {o.amount} {o.symbol})"
            for o in self.unknown_orders
        ]
        lines += [f"mismatched order {m.describe()}" for m in self.mismatched_orders]
        lines += [f"missing position {p.symbol} {p.side} {p.amount}" for p in self.missing_positions]
        lines += [f"unknown position {p.symbol} {p.side} {p.amount}" for p in self.unknown_positions]
        lines += [f"mismatched position {m.describe()}" for m in self.mismatched_positions]
        return lines


@dataclass(frozen=True, slots=True)
class ReadyState:
    reconciled: bool
    reason: str
    checked_at: datetime | None = None


def load_bundled_markets(path: Path = BUNDLED) -> list[dict[str, Any]]:
    """The bundled ccxt market structures, with the raw `info.orderTypes` ccxt validates order types against."""
    raw: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    markets = []
    for market in raw.values():
        info = dict(market.get("info") or {})
        info.setdefault("orderTypes", list(USDM_ORDER_TYPES))
        markets.append({**market, "info": info})
    return markets


def _dec(value: object) -> Decimal | None:
    """A Decimal from a Binance string / ccxt number; None for missing, empty or unparsable values."""
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _positive(value: object) -> Decimal | None:
    number = _dec(value)
    return number if number is not None and number > 0 else None


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


class BinanceUsdmExchange:
    """`Exchange` on Binance USDⓈ-M perpetuals through `ccxt.async_support.binanceusdm`."""

    name = "binance-usdm"

    def __init__(
        self,
        *,
        api_key: str,
        secret: str,
        testnet: bool = False,
        markets_path: Path = BUNDLED,
        retry: RetryPolicy | None = None,
        require_reconciled: bool = True,
        session: object | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`session` is an aiohttp.ClientSession-compatible transport (ccxt opens its own when None).
        `sleep` waits between retries (tests pass a recorder)."""
        config: dict[str, Any] = {
            "apiKey": api_key,
            "secret": secret,
            "enableRateLimit": True,
            "precisionMode": ccxt.DECIMAL_PLACES,
            "options": {"fetchOpenOrders": {"warnWithoutSymbol": False}},
        }
        if session is not None:
            config["session"] = session
        self._client: Any = ccxt_async.binanceusdm(config)
        if testnet:
            self._client.enable_demo_trading(True)
        self._client.set_markets(load_bundled_markets(markets_path))
        self.testnet = testnet
        self._secrets = tuple(s for s in (api_key, secret) if s)
        self._retry = retry or RetryPolicy()
        self._require_reconciled = require_reconciled
        self._sleep = sleep
        self._conditional: dict[str, bool] = {}  # client order id → lives on the algo-order endpoints
        self._ready = ReadyState(False, "not reconciled yet: open orders and positions not compared with the database")

    # ---- lifecycle and state -------------------------------------------------------------------------------

    @property
    def ready(self) -> ReadyState:
        return self._ready

    def mark_unreconciled(self, reason: str) -> None:
        """The app's record may differ from the exchange (a failed write after an order): refuse new
        entries until `reconcile` succeeds again."""
        self._ready = ReadyState(False, reason, datetime.now(UTC))

    @property
    def client(self) -> Any:
        """The underlying `ccxt.async_support.binanceusdm` instance (rate limiter, urls, options)."""
        return self._client

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "BinanceUsdmExchange":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ---- markets and precision -----------------------------------------------------------------------------

    def market(self, symbol: str) -> dict[str, Any]:
        try:
            market: dict[str, Any] = self._client.market(symbol)
        except ccxt.BaseError as exc:
            raise InvalidOrder(f"unknown market {symbol}") from exc
        return market

    def amount_to_precision(self, symbol: str, amount: Decimal) -> Decimal:
        """The amount truncated to the market's step by ccxt; InvalidOrder below one step."""
        self.market(symbol)
        try:
            return Decimal(self._client.amount_to_precision(symbol, str(amount)))
        except ccxt.BaseError as exc:
            raise InvalidOrder(self._scrub(str(exc))) from None

    def price_to_precision(self, symbol: str, price: Decimal) -> Decimal:
        """The price rounded to the market's tick by ccxt."""
        self.market(symbol)
        try:
            return Decimal(self._client.price_to_precision(symbol, str(price)))
        except ccxt.BaseError as exc:
            raise InvalidOrder(self._scrub(str(exc))) from None

    def contracts_for(self, symbol: str, notional: Decimal, price: Decimal) -> Decimal:
        """Contracts for a USDT `notional` at `price`, truncated to the market's amount precision by ccxt.

        InvalidOrder when the result is below the market's minimum amount or its value below the minimum
        notional (`limits.cost.min`)."""
        market = self.market(symbol)
        if not notional.is_finite() or notional <= 0:
            raise InvalidOrder(f"notional must be > 0 USDT, got {notional}")
        if not price.is_finite() or price <= 0:
            raise InvalidOrder(f"price must be > 0, got {price}")
        raw = notional / price
        try:
            contracts = Decimal(self._client.amount_to_precision(symbol, str(raw)))
        except ccxt.BaseError:
            contracts = Decimal(0)
        limits = market.get("limits") or {}
        min_amount = _dec((limits.get("amount") or {}).get("min"))
        min_cost = _dec((limits.get("cost") or {}).get("min"))
        if contracts <= 0 or (min_amount is not None and contracts < min_amount):
            raise InvalidOrder(
                f"{notional} USDT at {price} is {raw:.8g} contracts of {symbol}, below the minimum amount "
                f"{min_amount} after truncation to the amount precision"
            )
        if min_cost is not None and contracts * price < min_cost:
            raise InvalidOrder(
                f"{contracts} {symbol} at {price} is worth {contracts * price} USDT, below the minimum notional "
                f"{min_cost} USDT"
            )
        return contracts

    # ---- account settings ----------------------------------------------------------------------------------

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        self.market(symbol)
        if not 1 <= leverage <= 125:
            raise InvalidOrder(f"leverage must be between 1 and 125, got {leverage}")
        await self._call("set_leverage", self._client.set_leverage, leverage, symbol)

    async def set_margin_mode(self, symbol: str, mode: MarginMode) -> None:
        self.market(symbol)
        if mode not in ("isolated", "cross"):
            raise InvalidOrder(f"margin mode must be isolated or cross, got {mode}")
        # ccxt treats Binance's "No need to change margin type" (-4046) as success.
        await self._call("set_margin_mode", self._client.set_margin_mode, mode, symbol)

    # ---- orders --------------------------------------------------------------------------------------------

    async def create_order(self, request: OrderRequest) -> OrderState:
        if self._require_reconciled and not request.reduce_only and not self._ready.reconciled:
            raise NotReconciled(f"refusing to open {request.client_order_id}: {self._ready.reason}")
        ccxt_type, amount, price, params = self._order_arguments(request)
        conditional = request.type in _CONDITIONAL_TYPES
        try:
            raw = await self._call(
                "create_order",
                self._client.create_order,
                request.symbol,
                ccxt_type,
                request.side.value.lower(),
                amount,
                price,
                params,
            )
        except _DuplicateClientOrderId:
            logger.info("order %s already exists on Binance, returning it", request.client_order_id)
            self._conditional[request.client_order_id] = conditional
            return await self.fetch_order(request.symbol, request.client_order_id)
        self._conditional[request.client_order_id] = conditional
        return self._state(raw, request)

    def _order_arguments(self, request: OrderRequest) -> tuple[str, str, str | None, dict[str, Any]]:
        market = self.market(request.symbol)
        amount = self.amount_to_precision(request.symbol, request.amount)
        if amount != request.amount:
            raise InvalidOrder(
                f"amount {request.amount} is not at the amount precision of {request.symbol} (would be {amount})"
            )
        min_amount = _dec(((market.get("limits") or {}).get("amount") or {}).get("min"))
        if min_amount is not None and amount < min_amount:
            raise InvalidOrder(f"amount {amount} is below the minimum amount {min_amount} of {request.symbol}")
        params: dict[str, Any] = {"newClientOrderId": request.client_order_id}
        if request.reduce_only:
            params["reduceOnly"] = True
        price: str | None = None
        if request.type is OrderType.LIMIT:
            price = self._exact_price(request.symbol, request.price, "limit price")
        elif request.price is not None:
            raise InvalidOrder(f"a {request.type.value} order takes no limit price")
        if request.type in _CONDITIONAL_TYPES:
            params["stopPrice"] = self._exact_price(request.symbol, request.stop_price, "stop price")
        elif request.stop_price is not None:
            raise InvalidOrder(f"a {request.type.value} order takes no stop price")
        return request.type.value, str(amount), price, params

    def _exact_price(self, symbol: str, value: Decimal | None, what: str) -> str:
        if value is None or not value.is_finite() or value <= 0:
            raise InvalidOrder(f"{what} must be a finite price > 0, got {value}")
        rounded = self.price_to_precision(symbol, value)
        if rounded != value:
            raise InvalidOrder(f"{what} {value} is not on the price tick of {symbol} (would be {rounded})")
        return str(rounded)

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderState:
        self.market(symbol)
        known = self._conditional.get(client_order_id)
        for conditional in (False, True) if known is None else (known,):
            params: dict[str, Any] = {"clientOrderId": client_order_id}
            if conditional:
                params["trigger"] = True
            try:
                raw = await self._call("fetch_order", self._client.fetch_order, None, symbol, params)
            except OrderNotFound:
                continue
            self._conditional[client_order_id] = conditional
            return self._state(raw)
        raise OrderNotFound(f"no order {client_order_id} on {symbol}")

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        self.market(symbol)
        known = self._conditional.get(client_order_id)
        for conditional in (False, True) if known is None else (known,):
            params: dict[str, Any] = {"clientOrderId": client_order_id}
            if conditional:
                params["trigger"] = True
            try:
                raw = await self._call("cancel_order", self._client.cancel_order, None, symbol, params)
            except OrderNotFound:
                continue
            self._conditional[client_order_id] = conditional
            if conditional:  # the algo cancel answers only {algoId, clientAlgoId, code, msg}
                return await self.fetch_order(symbol, client_order_id)
            return self._state(raw)
        raise OrderNotFound(f"no open order {client_order_id} on {symbol}")

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Open orders of the types this app places (regular and conditional); others are left to `reconcile`."""
        states = []
        for order in await self._open_orders(symbol):
            state = self._maybe_state(order)
            if state is not None:
                states.append(state)
        return states

    async def _open_orders(self, symbol: str | None) -> list[dict[str, Any]]:
        if symbol is not None:
            self.market(symbol)
        regular: list[dict[str, Any]] = await self._call("fetch_open_orders", self._client.fetch_open_orders, symbol)
        algo: list[dict[str, Any]] = await self._call(
            "fetch_open_orders", self._client.fetch_open_orders, symbol, None, None, {"trigger": True}
        )
        for order in regular:
            self._conditional[str(order.get("clientOrderId"))] = False
        for order in algo:
            self._conditional[str(order.get("clientOrderId"))] = True
        return [*regular, *algo]

    # ---- positions and prices ------------------------------------------------------------------------------

    async def fetch_positions(self) -> list[ExchangePosition]:
        # positionRisk v2 still reports leverage and marginType per position (v3 dropped them).
        raw: list[dict[str, Any]] = await self._call(
            "fetch_positions", self._client.fetch_positions, None, {"useV2": True}
        )
        positions = []
        for position in raw:
            info = position.get("info") or {}
            signed = _dec(info.get("positionAmt")) or Decimal(0)
            if signed == 0:
                continue
            side: Literal["LONG", "SHORT"]
            position_side = str(info.get("positionSide") or "BOTH")
            if position_side in ("LONG", "SHORT"):
                side = "LONG" if position_side == "LONG" else "SHORT"
            else:
                side = "LONG" if signed > 0 else "SHORT"
            margin_type = str(info.get("marginType") or position.get("marginMode") or "").lower()
            positions.append(
                ExchangePosition(
                    symbol=str(position["symbol"]),
                    side=side,
                    amount=abs(signed),
                    entry_price=_dec(info.get("entryPrice")) or Decimal(0),
                    leverage=_dec(info.get("leverage")) or _dec(position.get("leverage")) or Decimal(0),
                    margin_mode="isolated" if margin_type == "isolated" else "cross",
                    liquidation_price=_positive(info.get("liquidationPrice")),
                    unrealized_pnl=_dec(info.get("unRealizedProfit")) or Decimal(0),
                )
            )
        return positions

    async def fetch_mark_price(self, symbol: str) -> Decimal:
        self.market(symbol)
        ticker: dict[str, Any] = await self._call("fetch_mark_price", self._client.fetch_mark_price, symbol)
        mark = _positive((ticker.get("info") or {}).get("markPrice")) or _positive(ticker.get("markPrice"))
        if mark is None:
            raise ExchangeUnavailable(f"no mark price for {symbol} in Binance's answer")
        return mark

    # ---- start-up reconciliation ---------------------------------------------------------------------------

    async def reconcile(
        self, expected_orders: Iterable[ExpectedOrder], expected_positions: Iterable[ExpectedPosition]
    ) -> ReconciliationReport:
        """Compare the exchange's open orders and positions with the database's; `ready` follows the result.

        Ready only when nothing is missing, unknown or different. On an exchange failure `ready` says so and
        the error propagates."""
        expected_orders = list(expected_orders)
        expected_positions = list(expected_positions)
        try:
            open_orders = [o for o in (self._exchange_order(raw) for raw in await self._open_orders(None)) if o]
            positions = await self.fetch_positions()
            by_client_id = {o.client_order_id: o for o in open_orders}
            missing: list[MissingOrder] = []
            mismatched: list[OrderMismatch] = []
            for expected in expected_orders:
                actual = by_client_id.get(expected.client_order_id)
                if actual is None:
                    missing.append(MissingOrder(expected, await self._fate(expected)))
                    continue
                differences = _order_differences(expected, actual)
                if differences:
                    mismatched.append(OrderMismatch(expected, actual, differences))
        except ExchangeError as exc:
            self._ready = ReadyState(False, f"reconciliation failed: {exc}", datetime.now(UTC))
            raise
        expected_ids = {o.client_order_id for o in expected_orders}
        unknown = tuple(o for o in open_orders if o.client_order_id not in expected_ids)
        held = {(p.symbol, p.side): p for p in positions}
        wanted = {(p.symbol, p.side): p for p in expected_positions}
        position_mismatches = []
        for key, expected_position in wanted.items():
            actual_position = held.get(key)
            if actual_position is not None and actual_position.amount != expected_position.amount:
                position_mismatches.append(
                    PositionMismatch(
                        expected_position,
                        actual_position,
                        (f"amount: expected {expected_position.amount}, exchange {actual_position.amount}",),
                    )
                )
        report = ReconciliationReport(
            checked_at=datetime.now(UTC),
            missing_orders=tuple(missing),
            unknown_orders=unknown,
            mismatched_orders=tuple(mismatched),
            missing_positions=tuple(p for key, p in wanted.items() if key not in held),
            unknown_positions=tuple(p for key, p in held.items() if key not in wanted),
            mismatched_positions=tuple(position_mismatches),
        )
        problems = report.problems()
        if problems:
            reason = f"reconciliation found {len(problems)} discrepancies: " + "; ".join(problems)
            logger.warning(reason)
        else:
            reason = f"reconciled: {len(open_orders)} open orders and {len(positions)} positions match the database"
        self._ready = ReadyState(not problems, reason, report.checked_at)
        return report

    async def _fate(self, expected: ExpectedOrder) -> OrderState | None:
        try:
            return await self.fetch_order(expected.symbol, expected.client_order_id)
        except OrderNotFound:
            return None

    # ---- ccxt plumbing -------------------------------------------------------------------------------------

    async def _call(self, action: str, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        failures = 0
        while True:
            try:
                return await method(*args)
            except ccxt.NetworkError as exc:  # timeouts, unavailable, DDoS protection / rate limit: transient
                failures += 1
                if failures >= self._retry.max_attempts:
                    raise self._app_error(action, exc) from None
                delay = self._retry.delay(failures)
                logger.warning(
                    "binance %s failed (%s), attempt %d of %d, retrying in %.2fs",
                    action,
                    type(exc).__name__,
                    failures,
                    self._retry.max_attempts,
                    delay,
                )
                await self._sleep(delay)
            except ccxt.BaseError as exc:  # rejections and everything else: never retried
                raise self._app_error(action, exc) from None

    def _app_error(self, action: str, exc: Exception) -> ExchangeError:
        message = f"{action}: {self._scrub(str(exc))}"
        match = _CODE.search(str(exc))
        code = match.group(1) if match else None
        if code in _DUPLICATE_CLIENT_ID:
            return _DuplicateClientOrderId(message)
        if code in _NOT_FOUND or isinstance(exc, ccxt.OrderNotFound):
            return OrderNotFound(message)
        if code in _INSUFFICIENT_MARGIN or isinstance(exc, ccxt.InsufficientFunds):
            return InsufficientMargin(message)
        if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
            return RateLimited(message)
        if isinstance(exc, ccxt.NetworkError):
            return ExchangeUnavailable(message)
        if isinstance(exc, ccxt.InvalidOrder | ccxt.BadRequest | ccxt.ArgumentsRequired):
            return InvalidOrder(message)
        if isinstance(exc, ccxt.OperationRejected):
            return OrderRejected(message)
        return ExchangeError(message)

    def _scrub(self, message: str) -> str:
        message = _SIGNATURE.sub("signature=***", message)
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    # ---- mapping Binance orders ----------------------------------------------------------------------------

    def _exchange_order(self, order: Mapping[str, Any]) -> ExchangeOrder | None:
        info: Mapping[str, Any] = order.get("info") or {}
        raw_status = str(info.get("status") or info.get("algoStatus") or "")
        status = _STATUSES.get(raw_status)
        side = str(info.get("side") or order.get("side") or "").upper()
        if status is None or side not in ("BUY", "SELL"):
            logger.warning("unreadable Binance order %s (status %r)", order.get("clientOrderId"), raw_status)
            return None
        raw_type = str(info.get("orderType") or info.get("origType") or info.get("type") or "").upper()
        return ExchangeOrder(
            client_order_id=str(order.get("clientOrderId") or ""),
            exchange_order_id=str(order.get("id") or ""),
            symbol=str(order.get("symbol")),
            side=OrderSide(side),
            type=raw_type,
            amount=_dec(info.get("origQty") or info.get("quantity")) or _dec(order.get("amount")) or Decimal(0),
            stop_price=_positive(info.get("stopPrice") or info.get("triggerPrice")),
            price=_positive(info.get("price")),
            reduce_only=_truthy(info.get("reduceOnly")),
            status=status,
            conditional="algoId" in info,
        )

    def _state(self, order: Mapping[str, Any], request: OrderRequest | None = None) -> OrderState:
        state = self._maybe_state(order, request)
        if state is None:
            raise ExchangeError(
                f"order {order.get('clientOrderId')} has a type this app does not handle: {order.get('type')}"
            )
        return state

    def _maybe_state(self, order: Mapping[str, Any], request: OrderRequest | None = None) -> OrderState | None:
        """OrderState from a ccxt order (its raw Binance `info`); None for order types this app does not place."""
        summary = self._exchange_order(order)
        if summary is None:
            raise ExchangeError(f"unreadable order in Binance's answer: {order.get('clientOrderId')}")
        info: Mapping[str, Any] = order.get("info") or {}
        if request is None:
            try:
                order_type = OrderType(summary.type)
            except ValueError:
                return None
            request = OrderRequest(
                client_order_id=summary.client_order_id,
                symbol=summary.symbol,
                side=summary.side,
                type=order_type,
                amount=summary.amount,
                price=summary.price if order_type is OrderType.LIMIT else None,
                stop_price=summary.stop_price if order_type in _CONDITIONAL_TYPES else None,
                reduce_only=summary.reduce_only,
            )
        filled = _dec(info.get("executedQty")) or Decimal(0)
        if summary.conditional and summary.status is OrderStatus.FILLED:
            filled = summary.amount  # a triggered algo order reports no executed quantity of its own
        reason = None
        if summary.conditional and str(info.get("actualOrderId") or ""):
            reason = f"triggered: market order {info.get('actualOrderId')}"
        return OrderState(
            request=request,
            exchange_order_id=summary.exchange_order_id,
            status=summary.status,
            filled=filled,
            average_price=_positive(info.get("avgPrice")),
            reason=reason,
        )


def _order_differences(expected: ExpectedOrder, actual: ExchangeOrder) -> tuple[str, ...]:
    pairs: list[tuple[str, object, object]] = [
        ("symbol", expected.symbol, actual.symbol),
        ("side", expected.side.value, actual.side.value),
        ("type", expected.type.value, actual.type),
        ("amount", expected.amount, actual.amount),
        ("stop price", expected.stop_price, actual.stop_price),
        ("reduce-only", expected.reduce_only, actual.reduce_only),
    ]
    if expected.type is OrderType.LIMIT:
        pairs.append(("price", expected.price, actual.price))
    return tuple(f"{name}: expected {want}, exchange {got}" for name, want, got in pairs if want != got)
