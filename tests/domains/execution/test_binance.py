"""The Binance USDⓈ-M adapter against a fake transport: ccxt runs for real (signing, routing, error mapping)
but its HTTP session is a recorder that answers with canned Binance responses. No socket is ever opened."""

import hashlib
import hmac
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import aiohttp
import pytest

from app.domains.execution.binance import (
    BinanceUsdmExchange,
    ExpectedOrder,
    ExpectedPosition,
    NotReconciled,
    RetryPolicy,
)
from app.domains.execution.exchange import (
    Exchange,
    ExchangeUnavailable,
    InsufficientMargin,
    InvalidOrder,
    OrderNotFound,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    RateLimited,
)
from tests.fake_binance import (
    API_KEY,
    LEVERAGE_BRACKETS,
    SECRET,
    FakeBinance,
    Recorded,
    Reply,
    algo_reply,
    binance_error,
    order_reply,
    position_reply,
)

BTC = "BTC/USDT:USDT"


# ---- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve, connect or open a real aiohttp session fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(aiohttp.TCPConnector, "__init__", refuse)
    monkeypatch.setattr(aiohttp.ClientSession, "__init__", refuse)


@dataclass
class Harness:
    exchange: BinanceUsdmExchange
    fake: FakeBinance
    sleeps: list[float]  # the adapter's backoff pauses
    weights: list[float]  # what ccxt's rate limiter was asked for, request by request


async def make(*, testnet: bool = False, retry: RetryPolicy | None = None) -> Harness:
    fake = FakeBinance()
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    exchange = BinanceUsdmExchange(
        api_key=API_KEY, secret=SECRET, testnet=testnet, retry=retry, session=fake, sleep=record_sleep
    )
    weights: list[float] = []

    async def record_throttle(cost: float | None = None) -> None:  # ccxt's limiter, minus the real waiting
        weights.append(1.0 if cost is None else float(cost))

    assert h_protocol(exchange).name == "binance-usdm"
    assert exchange.client.enableRateLimit is True
    exchange.client.throttle = record_throttle
    return Harness(exchange, fake, sleeps, weights)


def h_protocol(exchange: BinanceUsdmExchange) -> Exchange:
    return exchange  # mypy checks the adapter against the Exchange protocol here


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = await make()
    yield harness
    await harness.exchange.close()


async def reconcile_empty(h: Harness) -> None:
    """Start-up reconciliation against an empty account and an empty database, then forget its requests."""
    h.fake.on("GET", "/fapi/v1/openOrders", [])
    h.fake.on("GET", "/fapi/v1/openAlgoOrders", [])
    h.fake.on("GET", "/fapi/v1/leverageBracket", LEVERAGE_BRACKETS)
    h.fake.on("GET", "/fapi/v2/positionRisk", [])
    report = await h.exchange.reconcile([], [])
    assert report.ok
    assert h.exchange.ready.reconciled
    assert h.weights == [40, 40, 1, 1]  # ccxt's limiter knows Binance's weights: open orders of every symbol cost 40
    h.fake.requests.clear()
    h.weights.clear()


def assert_signed(request: Recorded) -> None:
    expected = hmac.new(SECRET.encode(), request.signed_payload.encode(), hashlib.sha256).hexdigest()
    assert request.params["signature"] == expected
    assert request.headers["X-MBX-APIKEY"] == API_KEY
    assert request.params["recvWindow"] == "10000"
    assert int(request.params["timestamp"]) > 1_600_000_000_000


# ---- markets and precision (offline, no request at all) -------------------------------------------------------


async def test_contracts_for_uses_market_precision_and_limits(h: Harness) -> None:
    ex = h.exchange
    assert ex.contracts_for(BTC, Decimal("420"), Decimal("42000")) == Decimal("0.01")
    assert ex.contracts_for(BTC, Decimal("100"), Decimal("42000")) == Decimal("0.002")  # 0.00238… truncated
    assert ex.contracts_for("XRP/USDT:USDT", Decimal("75.6"), Decimal("0.612345")) == Decimal("123.4")
    assert ex.contracts_for("DOGE/USDT:USDT", Decimal("100.29"), Decimal("0.0812345")) == Decimal("1234")
    with pytest.raises(InvalidOrder, match=r"below the minimum amount 0\.001"):
        ex.contracts_for(BTC, Decimal("3"), Decimal("42000"))  # 0.00007 BTC
    with pytest.raises(InvalidOrder, match="below the minimum notional 5 USDT"):
        ex.contracts_for("ETH/USDT:USDT", Decimal("4"), Decimal("2000"))  # 0.002 ETH is fine, 4 USDT is not
    with pytest.raises(InvalidOrder, match="unknown market"):
        ex.contracts_for("SOL/USDT:USDT", Decimal("100"), Decimal("100"))
    with pytest.raises(InvalidOrder, match="price must be > 0"):
        ex.contracts_for(BTC, Decimal("100"), Decimal("0"))
    assert h.fake.requests == []


async def test_orders_off_precision_are_refused_before_any_request(h: Harness) -> None:
    await reconcile_empty(h)
    off_tick = OrderRequest(
        "sl-x", BTC, OrderSide.SELL, OrderType.STOP_MARKET, Decimal("0.01"), None, Decimal("41160.05"), True
    )
    with pytest.raises(InvalidOrder, match="not on the price tick"):
        await h.exchange.create_order(off_tick)
    off_step = OrderRequest("e-x", BTC, OrderSide.BUY, OrderType.MARKET, Decimal("0.0105"))
    with pytest.raises(InvalidOrder, match="not at the amount precision"):
        await h.exchange.create_order(off_step)
    negative_stop = OrderRequest(
        "sl-y", BTC, OrderSide.SELL, OrderType.STOP_MARKET, Decimal("0.01"), None, Decimal("-5"), True
    )
    with pytest.raises(InvalidOrder, match="finite price > 0"):
        await h.exchange.create_order(negative_stop)
    assert h.fake.requests == []


# ---- the entry with its protective orders ---------------------------------------------------------------------


async def test_entry_with_take_profit_and_stop_sends_exactly_these_requests(h: Harness) -> None:
    await reconcile_empty(h)
    ex, fake = h.exchange, h.fake
    fake.on("POST", "/fapi/v1/leverage", {"leverage": 5, "maxNotionalValue": "80000000", "symbol": "BTCUSDT"})
    fake.on("POST", "/fapi/v1/marginType", {"code": 200, "msg": "success"})
    fake.on("POST", "/fapi/v1/order", order_reply("entry-1"))
    fake.on(
        "POST",
        "/fapi/v1/algoOrder",
        algo_reply("sl-1", "STOP_MARKET", "41160.0", algo_id=1),
        algo_reply("tp-1", "TAKE_PROFIT_MARKET", "42819.0", algo_id=2),
    )

    amount = ex.contracts_for(BTC, Decimal("420"), Decimal("42000"))
    await ex.set_leverage(BTC, 5)
    await ex.set_margin_mode(BTC, "isolated")
    entry = await ex.create_order(OrderRequest("entry-1", BTC, OrderSide.BUY, OrderType.MARKET, amount))
    stop = await ex.create_order(
        OrderRequest("sl-1", BTC, OrderSide.SELL, OrderType.STOP_MARKET, amount, None, Decimal("41160.0"), True)
    )
    take = await ex.create_order(
        OrderRequest("tp-1", BTC, OrderSide.SELL, OrderType.TAKE_PROFIT_MARKET, amount, None, Decimal("42819.0"), True)
    )

    assert [(r.method, r.host, r.path, r.business) for r in fake.requests] == [
        ("POST", "fapi.binance.com", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "5"}),
        ("POST", "fapi.binance.com", "/fapi/v1/marginType", {"symbol": "BTCUSDT", "marginType": "ISOLATED"}),
        (
            "POST",
            "fapi.binance.com",
            "/fapi/v1/order",
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "MARKET",
                "quantity": "0.01",
                "newClientOrderId": "entry-1",
                "newOrderRespType": "RESULT",
            },
        ),
        (
            "POST",
            "fapi.binance.com",
            "/fapi/v1/algoOrder",
            {
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "STOP_MARKET",
                "algoType": "CONDITIONAL",
                "quantity": "0.01",
                "triggerPrice": "41160",
                "reduceOnly": "true",
                "clientAlgoId": "sl-1",
                "newOrderRespType": "RESULT",
            },
        ),
        (
            "POST",
            "fapi.binance.com",
            "/fapi/v1/algoOrder",
            {
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "TAKE_PROFIT_MARKET",
                "algoType": "CONDITIONAL",
                "quantity": "0.01",
                "triggerPrice": "42819",
                "reduceOnly": "true",
                "clientAlgoId": "tp-1",
                "newOrderRespType": "RESULT",
            },
        ),
    ]
    assert len(h.weights) == len(fake.requests)  # every request went through ccxt's rate limiter
    for request in fake.requests:
        assert_signed(request)
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"

    assert entry.status is OrderStatus.FILLED
    assert entry.exchange_order_id == "4093425021"
    assert entry.filled == Decimal("0.010")
    assert entry.average_price == Decimal("42000.10")
    assert stop.status is OrderStatus.NEW and stop.exchange_order_id == "1"
    assert stop.request.stop_price == Decimal("41160.0") and stop.request.reduce_only
    assert take.status is OrderStatus.NEW and take.request.type is OrderType.TAKE_PROFIT_MARKET


async def test_testnet_switch_sends_to_binance_demo_trading() -> None:
    h = await make(testnet=True)
    try:
        h.fake.on("POST", "/fapi/v1/leverage", {"leverage": 3, "maxNotionalValue": "80000000", "symbol": "BTCUSDT"})
        await h.exchange.set_leverage(BTC, 3)
        assert [(r.host, r.path) for r in h.fake.requests] == [("demo-fapi.binance.com", "/fapi/v1/leverage")]
    finally:
        await h.exchange.close()


# ---- retries: transient only, bounded -------------------------------------------------------------------------


async def test_a_503_is_retried_with_backoff_and_the_order_placed_once(h: Harness) -> None:
    await reconcile_empty(h)
    h.fake.on(
        "POST",
        "/fapi/v1/order",
        Reply(503, "<html>503 Service Temporarily Unavailable</html>"),
        order_reply("entry-2"),
    )
    state = await h.exchange.create_order(
        OrderRequest("entry-2", BTC, OrderSide.BUY, OrderType.MARKET, Decimal("0.01"))
    )
    assert state.status is OrderStatus.FILLED
    assert h.fake.calls() == [("POST", "/fapi/v1/order")] * 2
    assert [r.business["newClientOrderId"] for r in h.fake.requests] == ["entry-2", "entry-2"]
    assert h.sleeps == [0.5]


async def test_network_errors_are_retried_a_bounded_number_of_times() -> None:
    h = await make(retry=RetryPolicy(max_attempts=3, base_delay=0.25, max_delay=10))
    try:
        h.fake.on("GET", "/fapi/v1/premiumIndex", *[aiohttp.ClientConnectionError("connection reset")] * 3)
        with pytest.raises(ExchangeUnavailable) as caught:
            await h.exchange.fetch_mark_price(BTC)
        assert h.fake.calls() == [("GET", "/fapi/v1/premiumIndex")] * 3
        assert h.sleeps == [0.25, 0.5]
        assert "fetch_mark_price" in str(caught.value)
    finally:
        await h.exchange.close()


async def test_rate_limit_is_retried_then_succeeds(h: Harness) -> None:
    h.fake.on(
        "GET",
        "/fapi/v1/premiumIndex",
        binance_error(429, -1003, "Too many requests; current limit is 2400 requests per minute."),
        binance_error(429, -1003, "Too many requests; current limit is 2400 requests per minute."),
        {"symbol": "BTCUSDT", "markPrice": "42100.12345678", "indexPrice": "42098.1", "lastFundingRate": "0.0001"},
    )
    assert await h.exchange.fetch_mark_price(BTC) == Decimal("42100.12345678")
    assert len(h.fake.requests) == 3
    assert h.sleeps == [0.5, 1.0]


async def test_persistent_rate_limit_surfaces_as_rate_limited() -> None:
    h = await make(retry=RetryPolicy(max_attempts=2, base_delay=0.1))
    try:
        h.fake.on("GET", "/fapi/v1/premiumIndex", *[binance_error(429, -1003, "Too many requests.")] * 2)
        with pytest.raises(RateLimited):
            await h.exchange.fetch_mark_price(BTC)
        assert len(h.fake.requests) == 2
    finally:
        await h.exchange.close()


@pytest.mark.parametrize(
    ("code", "msg", "error"),
    [
        (-2019, "Margin is insufficient.", InsufficientMargin),
        (-4164, "Order's notional must be no smaller than 5 (unless you choose reduce only).", InvalidOrder),
        (-1111, "Precision is over the maximum defined for this asset.", InvalidOrder),
    ],
)
async def test_a_rejection_is_never_retried(h: Harness, code: int, msg: str, error: type[Exception]) -> None:
    await reconcile_empty(h)
    h.fake.on("POST", "/fapi/v1/order", binance_error(400, code, msg), order_reply("entry-3"))
    with pytest.raises(error) as caught:
        await h.exchange.create_order(OrderRequest("entry-3", BTC, OrderSide.BUY, OrderType.MARKET, Decimal("0.01")))
    assert type(caught.value) is error
    assert h.fake.calls() == [("POST", "/fapi/v1/order")]  # exactly one request
    assert h.sleeps == []
    reason = str(caught.value)
    assert msg in reason and str(code) in reason
    assert SECRET not in reason and API_KEY not in reason


async def test_error_reasons_never_carry_the_credentials_or_the_signature() -> None:
    h = await make(retry=RetryPolicy(max_attempts=1))
    try:
        h.fake.on("GET", "/fapi/v1/premiumIndex", Reply(503, "maintenance"))
        with pytest.raises(ExchangeUnavailable) as caught:
            await h.exchange.fetch_mark_price(BTC)
        reason = str(caught.value)
        assert "premiumIndex" in reason and "503" in reason  # ccxt's message (method, url, status) is kept
        h.fake.on("GET", "/fapi/v1/openOrders", Reply(503, "maintenance"))
        with pytest.raises(ExchangeUnavailable) as signed:
            await h.exchange.fetch_open_orders(BTC)
        signed_reason = str(signed.value)
        assert "signature=***" in signed_reason
        assert h.fake.requests[-1].params["signature"] not in signed_reason
        for text in (reason, signed_reason):
            assert SECRET not in text and API_KEY not in text
    finally:
        await h.exchange.close()


# ---- idempotency ----------------------------------------------------------------------------------------------


async def test_a_duplicate_client_id_returns_the_existing_order(h: Harness) -> None:
    await reconcile_empty(h)
    h.fake.on("POST", "/fapi/v1/order", binance_error(400, -4116, "ClientOrderId is duplicated."))
    h.fake.on("GET", "/fapi/v1/order", order_reply("entry-4"))
    state = await h.exchange.create_order(
        OrderRequest("entry-4", BTC, OrderSide.BUY, OrderType.MARKET, Decimal("0.01"))
    )
    assert h.fake.calls() == [("POST", "/fapi/v1/order"), ("GET", "/fapi/v1/order")]
    assert h.fake.requests[1].business == {"symbol": "BTCUSDT", "origClientOrderId": "entry-4"}
    assert state.request.client_order_id == "entry-4"
    assert state.exchange_order_id == "4093425021"
    assert state.status is OrderStatus.FILLED and state.filled == Decimal("0.010")


async def test_a_duplicate_algo_client_id_returns_the_existing_stop(h: Harness) -> None:
    h.fake.on("POST", "/fapi/v1/algoOrder", binance_error(400, -20132, "The client algo id is duplicated."))
    h.fake.on("GET", "/fapi/v1/algoOrder", algo_reply("sl-4", "STOP_MARKET", "41160.0", algo_id=44))
    stop = OrderRequest(
        "sl-4", BTC, OrderSide.SELL, OrderType.STOP_MARKET, Decimal("0.01"), None, Decimal("41160"), True
    )
    state = await h.exchange.create_order(stop)  # reduce-only: allowed before reconciliation
    assert h.fake.calls() == [("POST", "/fapi/v1/algoOrder"), ("GET", "/fapi/v1/algoOrder")]
    assert h.fake.requests[1].business == {"symbol": "BTCUSDT", "clientAlgoId": "sl-4"}
    assert state.exchange_order_id == "44"
    assert state.request.type is OrderType.STOP_MARKET and state.request.stop_price == Decimal("41160.0")


async def test_a_timed_out_order_retried_into_a_duplicate_is_returned_once(h: Harness) -> None:
    await reconcile_empty(h)
    h.fake.on(
        "POST",
        "/fapi/v1/order",
        binance_error(408, -1007, "Timeout waiting for response from backend server. Send status unknown."),
        binance_error(400, -4116, "ClientOrderId is duplicated."),
    )
    h.fake.on("GET", "/fapi/v1/order", order_reply("entry-5"))
    state = await h.exchange.create_order(
        OrderRequest("entry-5", BTC, OrderSide.BUY, OrderType.MARKET, Decimal("0.01"))
    )
    assert h.fake.calls() == [("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/order"), ("GET", "/fapi/v1/order")]
    assert state.status is OrderStatus.FILLED


# ---- queries and cancels --------------------------------------------------------------------------------------


async def test_fetch_and_cancel_find_conditional_orders_on_the_algo_endpoints(h: Harness) -> None:
    h.fake.on("GET", "/fapi/v1/order", binance_error(400, -2013, "Order does not exist."))
    h.fake.on(
        "GET",
        "/fapi/v1/algoOrder",
        algo_reply("sl-6", "STOP_MARKET", "41160.0"),
        algo_reply("sl-6", "STOP_MARKET", "41160.0", status="CANCELED"),
    )
    h.fake.on("DELETE", "/fapi/v1/algoOrder", {"algoId": 3358, "clientAlgoId": "sl-6", "code": "200", "msg": "success"})
    found = await h.exchange.fetch_order(BTC, "sl-6")
    assert found.status is OrderStatus.NEW and found.request.type is OrderType.STOP_MARKET
    canceled = await h.exchange.cancel_order(BTC, "sl-6")
    assert canceled.status is OrderStatus.CANCELED
    assert h.fake.calls() == [
        ("GET", "/fapi/v1/order"),
        ("GET", "/fapi/v1/algoOrder"),
        ("DELETE", "/fapi/v1/algoOrder"),  # the adapter remembers it is an algo order
        ("GET", "/fapi/v1/algoOrder"),
    ]
    assert h.fake.requests[2].business == {"symbol": "BTCUSDT", "clientAlgoId": "sl-6"}


async def test_an_order_nowhere_is_order_not_found(h: Harness) -> None:
    h.fake.on("GET", "/fapi/v1/order", binance_error(400, -2013, "Order does not exist."))
    h.fake.on("GET", "/fapi/v1/algoOrder", binance_error(400, -2013, "Order does not exist."))
    with pytest.raises(OrderNotFound, match="ghost"):
        await h.exchange.fetch_order(BTC, "ghost")
    assert h.sleeps == []


async def test_positions_are_mapped_from_position_risk(h: Harness) -> None:
    h.fake.on("GET", "/fapi/v1/leverageBracket", LEVERAGE_BRACKETS)
    h.fake.on("GET", "/fapi/v2/positionRisk", [position_reply("-0.010"), position_reply("0.000", entry="0.0")])
    positions = await h.exchange.fetch_positions()
    assert len(positions) == 1
    position = positions[0]
    assert position.symbol == BTC and position.side == "SHORT" and position.amount == Decimal("0.010")
    assert position.entry_price == Decimal("42000.1") and position.leverage == Decimal("5")
    assert position.margin_mode == "isolated" and position.liquidation_price == Decimal("33800.12")
    assert position.unrealized_pnl == Decimal("-0.99900000")


# ---- reconciliation and readiness -----------------------------------------------------------------------------


async def test_not_ready_before_reconciliation_and_no_entry_is_sent(h: Harness) -> None:
    assert not h.exchange.ready.reconciled
    assert "not reconciled" in h.exchange.ready.reason
    with pytest.raises(NotReconciled):
        await h.exchange.create_order(OrderRequest("entry-7", BTC, OrderSide.BUY, OrderType.MARKET, Decimal("0.01")))
    assert h.fake.requests == []


async def test_reconciliation_reports_a_missing_stop_and_keeps_trading_refused(h: Harness) -> None:
    fake = h.fake
    expected_orders = [
        ExpectedOrder(
            "sl-8",
            BTC,
            OrderSide.SELL,
            OrderType.STOP_MARKET,
            Decimal("0.01"),
            stop_price=Decimal("41160"),
            reduce_only=True,
        ),
        ExpectedOrder.from_request(
            OrderRequest(
                "tp-8", BTC, OrderSide.SELL, OrderType.TAKE_PROFIT_MARKET, Decimal("0.01"), None, Decimal("42819"), True
            )
        ),
    ]
    expected_positions = [ExpectedPosition(BTC, "LONG", Decimal("0.01"))]
    fake.on("GET", "/fapi/v1/openOrders", [])
    fake.on(
        "GET",
        "/fapi/v1/openAlgoOrders",
        [algo_reply("tp-8", "TAKE_PROFIT_MARKET", "42819.0"), algo_reply("manual-1", "TRAILING_STOP_MARKET", "0.0")],
    )
    fake.on("GET", "/fapi/v1/leverageBracket", LEVERAGE_BRACKETS)
    fake.on("GET", "/fapi/v2/positionRisk", [position_reply("0.010")])
    fake.on("GET", "/fapi/v1/order", binance_error(400, -2013, "Order does not exist."))
    fake.on("GET", "/fapi/v1/algoOrder", binance_error(400, -2013, "Order does not exist."))

    report = await h.exchange.reconcile(expected_orders, expected_positions)

    assert [m.expected.client_order_id for m in report.missing_orders] == ["sl-8"]
    assert report.missing_orders[0].exchange_state is None  # never reached the exchange
    assert [o.client_order_id for o in report.unknown_orders] == ["manual-1"]
    assert report.unknown_orders[0].type == "TRAILING_STOP_MARKET"
    assert report.mismatched_orders == () and report.missing_positions == () and report.unknown_positions == ()
    assert not report.ok
    ready = h.exchange.ready
    assert not ready.reconciled and "missing order sl-8" in ready.reason and "manual-1" in ready.reason
    assert fake.calls() == [
        ("GET", "/fapi/v1/openOrders"),
        ("GET", "/fapi/v1/openAlgoOrders"),
        ("GET", "/fapi/v1/leverageBracket"),
        ("GET", "/fapi/v2/positionRisk"),
        ("GET", "/fapi/v1/order"),  # what became of sl-8?
        ("GET", "/fapi/v1/algoOrder"),
    ]
    assert fake.requests[0].business == {} and fake.requests[1].business == {}  # every symbol
    # open orders of types the app does not place are left out of fetch_open_orders, not mistaken for its own
    fake.on("GET", "/fapi/v1/openOrders", [])
    fake.on("GET", "/fapi/v1/openAlgoOrders", [algo_reply("manual-1", "TRAILING_STOP_MARKET", "0.0")])
    assert await h.exchange.fetch_open_orders() == []

    fake.requests.clear()
    with pytest.raises(NotReconciled, match="sl-8"):
        await h.exchange.create_order(OrderRequest("entry-8", BTC, OrderSide.BUY, OrderType.MARKET, Decimal("0.01")))
    assert fake.requests == []

    # repair: the stop is reduce-only, so it may be placed; a second reconciliation then matches
    fake.on("POST", "/fapi/v1/algoOrder", algo_reply("sl-8", "STOP_MARKET", "41160.0"))
    await h.exchange.create_order(
        OrderRequest("sl-8", BTC, OrderSide.SELL, OrderType.STOP_MARKET, Decimal("0.01"), None, Decimal("41160"), True)
    )
    fake.on("GET", "/fapi/v1/openOrders", [])
    fake.on(
        "GET",
        "/fapi/v1/openAlgoOrders",
        [algo_reply("tp-8", "TAKE_PROFIT_MARKET", "42819.0"), algo_reply("sl-8", "STOP_MARKET", "41160.0")],
    )
    fake.on("GET", "/fapi/v2/positionRisk", [position_reply("0.010")])
    report = await h.exchange.reconcile(expected_orders, expected_positions)
    assert report.ok
    assert h.exchange.ready.reconciled and h.exchange.ready.reason.startswith("reconciled")


async def test_reconciliation_reports_mismatches_and_unknown_positions(h: Harness) -> None:
    h.fake.on("GET", "/fapi/v1/openOrders", [])
    h.fake.on("GET", "/fapi/v1/openAlgoOrders", [algo_reply("sl-9", "STOP_MARKET", "41000.0", qty="0.005")])
    h.fake.on("GET", "/fapi/v1/leverageBracket", LEVERAGE_BRACKETS)
    h.fake.on("GET", "/fapi/v2/positionRisk", [position_reply("-0.010")])
    expected = ExpectedOrder(
        "sl-9",
        BTC,
        OrderSide.SELL,
        OrderType.STOP_MARKET,
        Decimal("0.01"),
        stop_price=Decimal("41160"),
        reduce_only=True,
    )
    report = await h.exchange.reconcile([expected], [ExpectedPosition(BTC, "LONG", Decimal("0.01"))])
    assert [m.differences for m in report.mismatched_orders] == [
        ("amount: expected 0.01, exchange 0.005", "stop price: expected 41160, exchange 41000.0")
    ]
    assert [(p.symbol, p.side) for p in report.missing_positions] == [(BTC, "LONG")]
    assert [(p.symbol, p.side) for p in report.unknown_positions] == [(BTC, "SHORT")]
    assert not h.exchange.ready.reconciled


async def test_a_failed_reconciliation_leaves_the_adapter_not_ready() -> None:
    h = await make(retry=RetryPolicy(max_attempts=2, base_delay=0.1))
    try:
        h.fake.on("GET", "/fapi/v1/openOrders", Reply(503, "down"), Reply(503, "down"))
        with pytest.raises(ExchangeUnavailable):
            await h.exchange.reconcile([], [])
        assert not h.exchange.ready.reconciled
        assert h.exchange.ready.reason.startswith("reconciliation failed")
    finally:
        await h.exchange.close()


# ---- the network guard itself ---------------------------------------------------------------------------------


async def test_the_fake_is_the_only_transport_and_the_guard_bites(h: Harness) -> None:
    h.fake.on("GET", "/fapi/v1/premiumIndex", {"symbol": "BTCUSDT", "markPrice": "42000.5"})
    assert await h.exchange.fetch_mark_price(BTC) == Decimal("42000.5")
    assert len(h.fake.requests) == 1
    # without an injected transport ccxt would open its own aiohttp session: the guard refuses it
    unguarded = BinanceUsdmExchange(api_key=API_KEY, secret=SECRET)
    try:
        with pytest.raises(AssertionError, match="network access attempted"):
            await unguarded.fetch_mark_price(BTC)
    finally:
        await unguarded.close()
