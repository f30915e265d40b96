"""EXCHANGE=binance end to end, offline: the app's order flow on the Binance USDⓈ-M adapter, with ccxt running
for real against a fake Binance account (tests/fake_binance.py) that keeps its orders and positions. Marks and
bars come from the QuoteFeed; the exchange sets the fills.

Shown here: start-up reconciliation gates new trades (and `/ready`); POST /trades sends the entry and the
exit plan's reduce-only STOP_MARKET / TAKE_PROFIT_MARKET orders and records what the exchange answered;
the monitor records a stop the exchange filled and cancels the rest; a refused entry is a denial with
nothing stored; a refused protective order closes the position rather than leave it unprotected; a
discrepancy found on restart keeps trading refused until the exchange matches the tables again."""

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.execution.binance import BinanceUsdmExchange
from app.domains.execution.paper import Bar
from app.domains.trading import service as trading_service
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
from tests.support import QuoteFeed, running, trade_body

D = Decimal
BTC = "BTC/USDT:USDT"
FILL = D("42000.1")  # where the fake exchange fills market orders
FEE = D("0.0004")


@dataclass
class FakeAccount:
    """The fake Binance account's state behind the fake transport: orders by client id, one net BTC position."""

    fake: FakeBinance = field(default_factory=FakeBinance)
    algos: dict[str, dict[str, Any]] = field(default_factory=dict)  # clientAlgoId -> reply
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # clientOrderId -> reply
    position: Decimal = Decimal(0)  # net BTC contracts (+ long)
    fill_price: Decimal = FILL
    refuse_entry: Reply | None = None
    refuse_algo_type: str | None = None  # e.g. TAKE_PROFIT_MARKET: refused with -2021

    def __post_init__(self) -> None:
        f = self.fake
        f.serve("POST", "/fapi/v1/leverage", lambda r: {"leverage": int(r.params["leverage"]), "symbol": "BTCUSDT"})
        f.serve("POST", "/fapi/v1/marginType", lambda r: {"code": 200, "msg": "success"})
        f.serve("POST", "/fapi/v1/order", self._order)
        f.serve("GET", "/fapi/v1/order", self._get_order)
        f.serve("POST", "/fapi/v1/algoOrder", self._algo)
        f.serve("GET", "/fapi/v1/algoOrder", lambda r: self.algos[r.params["clientAlgoId"]])
        f.serve("DELETE", "/fapi/v1/algoOrder", self._cancel_algo)
        f.serve("GET", "/fapi/v1/openOrders", lambda r: [])
        f.serve(
            "GET", "/fapi/v1/openAlgoOrders", lambda r: [a for a in self.algos.values() if a["algoStatus"] == "NEW"]
        )
        f.serve("GET", "/fapi/v1/leverageBracket", lambda r: LEVERAGE_BRACKETS)
        f.serve("GET", "/fapi/v2/positionRisk", lambda r: [position_reply(str(self.position))] if self.position else [])

    def _order(self, r: Recorded) -> Reply | dict[str, Any]:
        p = r.params
        reduce_only = p.get("reduceOnly") == "true"
        if self.refuse_entry is not None and not reduce_only:
            return self.refuse_entry
        qty = D(p["quantity"])
        if reduce_only:
            qty = min(qty, abs(self.position))
        self.position += qty if p["side"] == "BUY" else -qty
        reply = order_reply(p["newClientOrderId"], side=p["side"], qty=p["quantity"])
        reply.update(avgPrice=str(self.fill_price), executedQty=str(qty), reduceOnly=reduce_only)
        self.orders[p["newClientOrderId"]] = reply
        return reply

    def _get_order(self, r: Recorded) -> Reply | dict[str, Any]:
        found = self.orders.get(r.params.get("origClientOrderId", ""))
        return found if found is not None else binance_error(400, -2013, "Order does not exist.")

    def _algo(self, r: Recorded) -> Reply | dict[str, Any]:
        p = r.params
        if p["type"] == self.refuse_algo_type:
            return binance_error(400, -2021, "Order would immediately trigger.")
        reply = algo_reply(p["clientAlgoId"], p["type"], p["triggerPrice"], qty=p["quantity"], algo_id=len(self.algos))
        reply.update(side=p["side"])
        self.algos[p["clientAlgoId"]] = reply
        return reply

    def _cancel_algo(self, r: Recorded) -> dict[str, Any]:
        self.algos[r.params["clientAlgoId"]]["algoStatus"] = "CANCELED"
        return {"clientAlgoId": r.params["clientAlgoId"], "code": "200", "msg": "success"}

    def trigger(self, order_type: str, price: Decimal) -> str:
        """The exchange triggers and fills the resting algo order of this type at `price`."""
        cid, algo = next(
            (k, a) for k, a in self.algos.items() if a["orderType"] == order_type and a["algoStatus"] == "NEW"
        )
        algo.update(algoStatus="FINISHED", avgPrice=str(price), executedQty=algo["quantity"], actualOrderId="777")
        self.position += D(algo["quantity"]) * (1 if algo["side"] == "BUY" else -1)
        return cid

    def calls(self) -> list[tuple[str, str]]:
        return self.fake.calls()


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(aiohttp.ClientSession, "__init__", refuse)


Live = tuple[httpx.AsyncClient, Container, QuoteFeed]


@asynccontextmanager
async def live_app(settings: Settings, account: FakeAccount) -> AsyncIterator[Live]:
    async def no_sleep(seconds: float) -> None:
        return None

    exchange = BinanceUsdmExchange(api_key=API_KEY, secret=SECRET, session=account.fake, sleep=no_sleep)

    async def no_throttle(cost: float | None = None) -> None:
        return None

    exchange.client.throttle = no_throttle
    feed = QuoteFeed()
    feed.quote(BTC, D(42000))
    container = bootstrap(settings, price_feed=feed, live_exchange=exchange)
    async with running(container) as client:
        yield client, container, feed


@pytest.fixture
def live_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(exchange="binance", binance_api_key=API_KEY, binance_secret=SECRET)


def btc_trade(**overrides: Any) -> dict[str, Any]:
    body = trade_body(symbol="BTCUSDT", side="LONG", notional="420", leverage="5", price="42000")
    body.pop("stop_loss", None)
    body.update(overrides)
    return body


async def test_start_reconciles_then_a_trade_sends_its_entry_and_protective_orders(
    live_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trading_service, "LIVE_POLL_SECONDS", 1e9)  # the bar path alone (the poll: below)
    account = FakeAccount()
    async with live_app(live_settings, account) as (client, container, feed):
        ready = (await client.get("/ready")).json()
        exchange = ready["components"]["exchange"]
        assert exchange["name"] == "binance-usdm" and exchange["status"] == "up" and exchange["reconciled"] is True
        assert account.calls() == [
            ("GET", "/fapi/v1/openOrders"),
            ("GET", "/fapi/v1/openAlgoOrders"),
            ("GET", "/fapi/v1/leverageBracket"),
            ("GET", "/fapi/v2/positionRisk"),
        ]
        account.fake.requests.clear()

        response = await client.post("/trades", json=btc_trade())
        assert response.status_code == 201, response.text
        trade = response.json()["trade"]
        assert D(trade["entry_price"]) == FILL  # the exchange's fill, not the quote
        shown = response.json()
        assert shown["position"]["exchange"] == "binance-usdm"
        assert sorted(o["client_order_id"] for o in shown["orders"] if o["purpose"] != "ENTRY") == sorted(
            leg["order_client_id"] for leg in shown["exit_plan"]["legs"]
        )
        assert D(trade["quantity"]) == D("0.010")
        sent = [(r.method, r.path, r.business) for r in account.fake.requests]
        assert [c[:2] for c in sent] == [
            ("POST", "/fapi/v1/marginType"),
            ("POST", "/fapi/v1/leverage"),
            ("POST", "/fapi/v1/order"),
            ("POST", "/fapi/v1/algoOrder"),
            ("POST", "/fapi/v1/algoOrder"),
            ("POST", "/fapi/v1/algoOrder"),
            ("POST", "/fapi/v1/algoOrder"),
        ]
        assert sent[0][2] == {"symbol": "BTCUSDT", "marginType": "ISOLATED"}
        assert sent[1][2] == {"symbol": "BTCUSDT", "leverage": "5"}
        entry = sent[2][2]
        assert (entry["type"], entry["side"], entry["quantity"]) == ("MARKET", "BUY", "0.01")
        protective = [s[2] for s in sent[3:]]
        assert all(p["reduceOnly"] == "true" and p["side"] == "SELL" for p in protective)
        stops = [p for p in protective if p["type"] == "STOP_MARKET"]
        takes = [p for p in protective if p["type"] == "TAKE_PROFIT_MARKET"]
        assert len(stops) == 1 and D(stops[0]["quantity"]) == D("0.01")
        assert sum(D(p["quantity"]) for p in takes) == D("0.01")
        assert D(stops[0]["triggerPrice"]) < FILL < min(D(p["triggerPrice"]) for p in takes)

        position = (await client.get("/positions")).json()["items"][0]
        assert position["exchange"] == "binance-usdm"
        orders = (await client.get("/orders", params={"position_id": position["id"]})).json()["items"]
        assert sorted(o["client_order_id"] for o in orders if o["status"] == "NEW") == sorted(account.algos)

        # The exchange fills the stop; the monitor asks about the resting orders on the next bar.
        account.fake.requests.clear()
        stop_id = account.trigger("STOP_MARKET", D("41150.0"))
        bar_ms = (int(feed.now().timestamp() * 1000) // 3_600_000) * 3_600_000
        feed.push(Bar(BTC, bar_ms, D(42000), D(42010), D(41100), D(41200)))
        await container.monitor.tick()
        calls = account.calls()
        # each resting order asked about once, then the three take-profits left canceled (each cancel is
        # a DELETE and the adapter's read-back of the canceled order)
        assert calls[:4] == [("GET", "/fapi/v1/algoOrder")] * 4
        assert calls[4:] == [("DELETE", "/fapi/v1/algoOrder"), ("GET", "/fapi/v1/algoOrder")] * 3
        assert ("POST", "/fapi/v1/order") not in calls  # the exchange closed it: the app sends no close

        closed = (await client.get(f"/trades/{trade['id']}")).json()
        assert closed["status"] == "CLOSED"
        assert D(closed["exit_price"]) == D("41150.0")
        amount = D("0.010")
        expected = (D("41150.0") - FILL) * amount - FEE * FILL * amount - FEE * D("41150.0") * amount
        assert D(closed["realized_pnl"]) == expected.quantize(D("0.00000001"))
        by_id = {o["client_order_id"]: o for o in (await client.get("/orders")).json()["items"]}
        assert by_id[stop_id]["status"] == "FILLED"
        assert all(account.algos[c]["algoStatus"] != "NEW" for c in account.algos)
        assert account.position == 0


async def test_an_entry_the_exchange_refuses_is_a_denial_and_nothing_is_stored(live_settings: Settings) -> None:
    account = FakeAccount(refuse_entry=binance_error(400, -2019, "Margin is insufficient."))
    async with live_app(live_settings, account) as (client, _, _):
        account.fake.requests.clear()
        response = await client.post("/trades", json=btc_trade())
        assert response.status_code == 403, response.text  # a denial, like RiskGuard's
        body = response.json()
        assert [r["code"] for r in body["reasons"]] == ["EXCHANGE_REJECTED"]
        assert "EXCHANGE_REJECTED" in response.text and "insufficient" in response.text.lower(), body
        assert (await client.get("/positions")).json()["items"] == []
        assert ("POST", "/fapi/v1/algoOrder") not in account.calls()
        assert account.calls().count(("POST", "/fapi/v1/order")) == 1  # a rejection is never retried


async def test_a_refused_protective_order_closes_the_position_at_once(live_settings: Settings) -> None:
    account = FakeAccount(refuse_algo_type="TAKE_PROFIT_MARKET")
    async with live_app(live_settings, account) as (client, _, _):
        response = await client.post("/trades", json=btc_trade())
        assert response.status_code == 201, response.text
        trade = (await client.get(f"/trades/{response.json()['trade']['id']}")).json()
        assert trade["status"] == "CLOSED"
        assert account.position == 0  # closed on the exchange with a reduce-only market order
        closes = [r.business for r in account.fake.requests if r.path == "/fapi/v1/order"][1:]
        assert len(closes) == 1 and closes[0]["reduceOnly"] == "true" and closes[0]["side"] == "SELL"
        assert all(a["algoStatus"] == "CANCELED" for a in account.algos.values())  # the stop placed first
        position = (await client.get("/positions", params={"status": "CLOSED"})).json()["items"][0]
        detail = (await client.get(f"/positions/{position['id']}")).json()
        kinds = [e["kind"] for e in detail["events"]]
        assert "protection_failed" in kinds
        assert any("closed rather than left unprotected" in (e["detail"] or "") for e in detail["events"])


async def test_a_discrepancy_on_restart_keeps_new_trades_refused_until_it_is_resolved(
    live_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = FakeAccount()
    async with live_app(live_settings, account) as (client, _, _):
        assert (await client.post("/trades", json=btc_trade())).status_code == 201
    # While the app was down, someone closed the position and canceled its orders by hand.
    account.position = D(0)
    for algo in account.algos.values():
        algo["algoStatus"] = "CANCELED"
    async with live_app(live_settings, account) as (client, container, _):
        ready = await client.get("/ready")
        assert ready.status_code == 503
        exchange = ready.json()["components"]["exchange"]
        assert exchange["status"] == "not_reconciled" and exchange["reconciled"] is False
        assert "discrepancies" in exchange["reconciliation"]
        refused = await client.post("/trades", json=btc_trade(client_order_id="after-restart"))
        assert refused.status_code == 503
        assert "not ready for new trades" in refused.text and "discrepancies" in refused.text
        # Fixed on the exchange (the position is back as the tables have it): the monitor's next try agrees.
        account.position = D("0.010")
        for algo in account.algos.values():
            algo["algoStatus"] = "NEW"
        monkeypatch.setattr(trading_service, "RECONCILE_RETRY_SECONDS", 0.0)
        await container.monitor.tick()
        assert (await client.get("/ready")).json()["components"]["exchange"]["reconciled"] is True
        # One-way mode: an opposite entry on the symbol is refused before anything is sent.
        count = len(account.fake.requests)
        opposite = await client.post("/trades", json=btc_trade(side="SHORT", client_order_id="short"))
        assert opposite.status_code == 403 and "one-way mode" in opposite.text
        assert len(account.fake.requests) == count


async def test_a_failed_reconciliation_call_is_retried_by_the_monitor(
    live_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = FakeAccount()
    outage = {"on": True}
    real = account.fake.handlers[("GET", "/fapi/v2/positionRisk")]

    def flaky(r: Recorded) -> Any:
        return binance_error(503, -1001, "Internal error; unable to process your request.") if outage["on"] else real(r)

    account.fake.handlers[("GET", "/fapi/v2/positionRisk")] = flaky
    async with live_app(live_settings, account) as (client, container, _):
        exchange = (await client.get("/ready")).json()["components"]["exchange"]
        assert exchange["reconciled"] is False and "reconciliation failed" in exchange["reconciliation"]
        assert (await client.post("/trades", json=btc_trade())).status_code == 503
        outage["on"] = False
        monkeypatch.setattr(trading_service, "RECONCILE_RETRY_SECONDS", 0.0)
        await container.monitor.tick()
        assert (await client.get("/ready")).status_code == 200
        assert (await client.post("/trades", json=btc_trade())).status_code == 201
        await asyncio.sleep(0)


async def test_a_stop_the_exchange_fills_between_bars_is_recorded_by_the_next_poll(
    live_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = FakeAccount()
    async with live_app(live_settings, account) as (client, container, _):
        trade = (await client.post("/trades", json=btc_trade())).json()["trade"]
        monkeypatch.setattr(trading_service, "LIVE_POLL_SECONDS", 0.0)
        account.fake.requests.clear()
        await container.monitor.tick()  # no new bar, nothing happened on the exchange: one look, no change
        assert account.calls() == [("GET", "/fapi/v1/openOrders"), ("GET", "/fapi/v1/openAlgoOrders")]
        assert (await client.get(f"/trades/{trade['id']}")).json()["status"] == "OPEN"

        account.fake.requests.clear()
        stop_id = account.trigger("STOP_MARKET", D("41150.0"))
        await container.monitor.tick()  # still no new bar: the poll finds the stop gone from the open orders
        calls = account.calls()
        assert calls[:3] == [
            ("GET", "/fapi/v1/openOrders"),
            ("GET", "/fapi/v1/openAlgoOrders"),
            ("GET", "/fapi/v1/algoOrder"),  # only the order that left the open set is asked about
        ]
        assert calls.count(("DELETE", "/fapi/v1/algoOrder")) == 3
        closed = (await client.get(f"/trades/{trade['id']}")).json()
        assert closed["status"] == "CLOSED" and D(closed["exit_price"]) == D("41150.0")
        orders = {o["client_order_id"]: o["status"] for o in (await client.get("/orders")).json()["items"]}
        assert orders[stop_id] == "FILLED"


async def test_an_operator_close_is_a_reduce_only_market_order_and_cancels_the_rest(live_settings: Settings) -> None:
    account = FakeAccount()
    async with live_app(live_settings, account) as (client, _, _):
        opened = (await client.post("/trades", json=btc_trade())).json()
        position_id = opened["position"]["id"]
        account.fill_price = D("42300.0")
        account.fake.requests.clear()
        closed = await client.post(f"/positions/{position_id}/close", json={"reason": "operator"})
        assert closed.status_code == 200, closed.text
        assert closed.json()["status"] == "CLOSED"
        sent = [(r.method, r.path, r.business) for r in account.fake.requests]
        order = [b for m, p, b in sent if (m, p) == ("POST", "/fapi/v1/order")]
        assert len(order) == 1 and order[0]["reduceOnly"] == "true" and order[0]["side"] == "SELL"
        assert order[0]["type"] == "MARKET" and order[0]["quantity"] == "0.01"
        assert [(m, p) for m, p, _ in sent].count(("DELETE", "/fapi/v1/algoOrder")) == 4  # TP x3 and the stop
        assert account.position == 0 and all(a["algoStatus"] == "CANCELED" for a in account.algos.values())
        trade = (await client.get(f"/trades/{opened['trade']['id']}")).json()
        assert trade["status"] == "CLOSED" and D(trade["exit_price"]) == D("42300.0")
        # The exchange refusing a close is a 409 naming it, and nothing changes.
        again = await client.post("/trades", json=btc_trade(client_order_id="second"))
        second = again.json()["position"]["id"]
        account.refuse_entry = binance_error(400, -2022, "ReduceOnly Order is rejected.")
        account.fake.routes.clear()

        def refuse_reduce(r: Recorded) -> Reply | dict[str, Any]:
            return binance_error(400, -2022, "ReduceOnly Order is rejected.")

        account.fake.serve("POST", "/fapi/v1/order", refuse_reduce)
        refused = await client.post(f"/positions/{second}/close", json={})
        assert refused.status_code == 409, refused.text
        assert "refused the close" in refused.text
        detail = (await client.get(f"/positions/{second}")).json()
        assert detail["status"] == "OPEN"
        kinds = [e["kind"] for e in detail["events"]]
        assert "arbiter_close" not in kinds and "exchange_refused_close" in kinds  # what happened, not what was meant
