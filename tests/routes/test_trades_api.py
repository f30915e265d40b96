"""POST/GET /trades and close: validation, denial format, idempotency, PnL, events."""

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from app.bootstrap import Container
from app.domains.trading.events import TradeClosed, TradeDenied, TradeOpened
from tests.support import EventRecorder, FakeClock, trade_body

Api = tuple[httpx.AsyncClient, Container]


async def counts(client: httpx.AsyncClient) -> tuple[int, int]:
    trades = (await client.get("/trades")).json()["total"]
    decisions = (await client.get("/api/v2/risk/decisions")).json()["total"]
    return trades, decisions


async def test_open_trade_is_stored_with_its_decision(api: Api, recorder: EventRecorder) -> None:
    client, container = api
    response = await client.post("/trades", json=trade_body(client_order_id="c-1", source="ensemble"))
    assert response.status_code == 201, response.text
    body = response.json()
    trade, decision = body["trade"], body["decision"]
    assert trade["symbol"] == "BTC/USDT:USDT"
    assert trade["status"] == "OPEN"
    assert trade["quantity"] == "0.004"  # 250 / 60000 = 0.00416 truncated to the 0.001 step
    assert trade["notional"] == "240"
    assert trade["entry_fee"] == "0.096"  # 240 * 0.0004
    assert trade["signal_source"] == "ensemble"
    assert decision["allowed"] is True and decision["reasons"] == []
    assert decision["profile_name"] == trade["risk_profile_name"] == "NORMAL"
    assert decision["trade_id"] == trade["id"]
    assert decision["trace_id"] == response.headers["x-trace-id"] == trade["trace_id"]
    assert (await client.get(f"/trades/{trade['id']}")).json() == trade
    account = (await client.get("/api/v2/account")).json()
    assert account["equity"] == "9999.904"
    assert account["open_positions"] == 1
    assert account["open_notional"] == "240"
    assert account["used_margin"] == "120"
    await container.bus.drain()
    assert [e.trade_id for e in recorder.of(TradeOpened)] == [trade["id"]]


@pytest.mark.parametrize("symbol", ["BTCUSDT", "BTC/USDT:USDT", "btcusdt"])
async def test_symbols_are_stored_in_one_canonical_form(api: Api, symbol: str) -> None:
    client, _ = api
    response = await client.post("/trades", json=trade_body(symbol=symbol))
    assert response.status_code == 201
    assert response.json()["trade"]["symbol"] == "BTC/USDT:USDT"
    listed = (await client.get("/trades", params={"symbol": "BTCUSDT"})).json()
    assert listed["total"] == 1


async def test_denial_is_403_with_every_reason_and_is_stored(api: Api, recorder: EventRecorder) -> None:
    client, container = api
    response = await client.post(
        "/trades", json=trade_body(leverage="6", notional="1500", confidence=None, stop_loss=None)
    )
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "risk_denied"
    assert body["profile_name"] == "NORMAL"
    assert body["trace_id"] == response.headers["x-trace-id"]
    codes = [r["code"] for r in body["reasons"]]
    assert codes == ["MAX_LEVERAGE", "POSITION_SIZE_CAP", "CONFIDENCE_MISSING"]
    assert body["reasons"][0]["detail"] == "MAX_LEVERAGE: requested=6 max=5 profile=NORMAL"
    assert "no stop_loss given: assumed a 2% stop distance" in body["decision"]["assumptions"]
    assert await counts(client) == (0, 1)
    stored = (await client.get("/api/v2/risk/decisions", params={"allowed": "false"})).json()["items"][0]
    assert stored["id"] == body["decision"]["id"]
    assert stored["limits"]["profile"]["max_leverage"] == 5.0
    await container.bus.drain()
    assert recorder.of(TradeDenied)[0].reason_codes == tuple(codes)


async def test_stale_price_is_denied(api: Api, clock: FakeClock) -> None:
    client, _ = api
    old = (clock.now - timedelta(seconds=61)).isoformat()
    response = await client.post("/trades", json=trade_body(price_as_of=old))
    assert response.status_code == 403
    assert [r["code"] for r in response.json()["reasons"]] == ["STALE_PRICE"]
    fresh = (clock.now - timedelta(seconds=60)).isoformat()
    assert (await client.post("/trades", json=trade_body(price_as_of=fresh))).status_code == 201


BAD_BODIES = {
    "nan price": {"price": "NaN"},
    "infinite notional": {"notional": "Infinity"},
    "zero price": {"price": "0"},
    "negative notional": {"notional": "-100"},
    "zero leverage": {"leverage": 0},
    "negative stop": {"stop_loss": "-1"},
    "long stop above entry": {"stop_loss": "61000"},
    "long stop at entry": {"stop_loss": "60000"},
    "short stop below entry": {"side": "SHORT", "stop_loss": "59000"},
    "unknown side": {"side": "BUY"},
    "unknown symbol": {"symbol": "FOOUSDT"},
    "spot symbol": {"symbol": "BTC/USDT"},
    "naive price_as_of": {"price_as_of": "2026-01-01T00:00:00"},
    "confidence above one": {"confidence": "1.5"},
    "unknown field": {"colour": "red"},
    "below exchange minimum": {"notional": "4", "price": "1", "symbol": "DOGEUSDT", "stop_loss": None},
    "amount below one step": {"notional": "30", "price": "60000"},
    "absurd price": {"price": "1e30"},
    "bad client_order_id": {"client_order_id": "has spaces"},
    "naive signal_as_of": {"signal_as_of": "2026-01-01T00:00:00"},
    "NUL in signal_as_of": {"signal_as_of": "2026-01-01T00:00:00Z\u0000"},
    "year 10000 signal_as_of": {"signal_as_of": "10000-01-01T00:00:00Z"},
    "numeric signal_as_of": {"signal_as_of": 1e300},
}


@pytest.mark.parametrize("changes", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_malformed_input_is_422_and_stores_nothing(api: Api, changes: dict[str, object]) -> None:
    client, _ = api
    body = trade_body(**changes)
    response = await client.post("/trades", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] in ("validation_error", "invalid_request")
    assert payload["detail"]
    assert await counts(client) == (0, 0)


async def test_raw_nan_literal_in_json_is_422(api: Api) -> None:
    client, _ = api
    raw = b'{"symbol":"BTCUSDT","side":"LONG","notional":NaN,"leverage":2,"price":60000,"confidence":0.8}'
    response = await client.post("/trades", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert await counts(client) == (0, 0)


async def test_same_client_order_id_returns_the_original_result(api: Api) -> None:
    client, _ = api
    body = trade_body(client_order_id="dup-1")
    first = await client.post("/trades", json=body)
    second = await client.post("/trades", json=body)
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.json() == first.json()
    assert await counts(client) == (1, 1)


async def test_a_denied_client_order_id_replays_the_denial(api: Api) -> None:
    client, _ = api
    body = trade_body(client_order_id="dup-2", leverage="9")
    first = await client.post("/trades", json=body)
    second = await client.post("/trades", json=body)
    assert first.status_code == second.status_code == 403
    assert second.json() == first.json()
    assert await counts(client) == (0, 1)


async def test_client_order_id_reused_for_another_request_is_409(api: Api) -> None:
    client, _ = api
    assert (await client.post("/trades", json=trade_body(client_order_id="dup-3"))).status_code == 201
    response = await client.post("/trades", json=trade_body(client_order_id="dup-3", notional="260"))
    assert response.status_code == 409
    assert "dup-3" in response.json()["detail"]
    assert await counts(client) == (1, 1)


async def test_concurrent_duplicates_open_one_trade(api: Api) -> None:
    client, _ = api
    body = trade_body(client_order_id="dup-race")
    responses = await asyncio.gather(*(client.post("/trades", json=body) for _ in range(20)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["trade"]["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert await counts(client) == (1, 1)


async def test_close_long_realizes_pnl_net_of_fees(api: Api, recorder: EventRecorder) -> None:
    client, container = api
    opened = (await client.post("/trades", json=trade_body())).json()["trade"]
    response = await client.post(f"/trades/{opened['id']}/close", json={"price": "61500.04"})
    assert response.status_code == 200, response.text
    closed = response.json()
    # quantity 0.004; exit rounded to the 0.1 tick: 61500.0
    gross = (Decimal("61500.0") - Decimal("60000")) * Decimal("0.004")
    exit_fee = (Decimal("61500.0") * Decimal("0.004") * Decimal("0.0004")).quantize(Decimal("1e-8"))
    expected = gross - Decimal("0.096") - exit_fee
    assert closed["status"] == "CLOSED"
    assert closed["exit_price"] == "61500"
    assert Decimal(closed["exit_fee"]) == exit_fee
    assert Decimal(closed["realized_pnl"]) == expected
    account = (await client.get("/api/v2/account")).json()
    assert Decimal(account["equity"]) == Decimal(10000) + expected
    assert account["open_positions"] == 0 and account["open_notional"] == "0" and account["used_margin"] == "0"
    await container.bus.drain()
    event = recorder.of(TradeClosed)[0]
    assert event.realized_pnl == expected and event.equity_after == Decimal(account["equity"])


async def test_close_short_gains_when_price_falls(api: Api) -> None:
    client, _ = api
    body = trade_body(symbol="ETHUSDT", side="SHORT", price="3000", stop_loss="3050", notional="300")
    opened = (await client.post("/trades", json=body)).json()["trade"]
    assert opened["quantity"] == "0.1"
    closed = (await client.post(f"/trades/{opened['id']}/close", json={"price": "2900"})).json()
    fees = Decimal("0.12") + Decimal("0.116")
    assert Decimal(closed["realized_pnl"]) == Decimal("10") - fees


async def test_close_errors(api: Api) -> None:
    client, _ = api
    opened = (await client.post("/trades", json=trade_body())).json()["trade"]
    assert (await client.post(f"/trades/{opened['id']}/close", json={"price": "0"})).status_code == 422
    assert (await client.post(f"/trades/{opened['id']}/close", json={"price": "NaN"})).status_code == 422
    assert (await client.post(f"/trades/{uuid.uuid4()}/close", json={"price": "1"})).status_code == 404
    assert (await client.post(f"/trades/{opened['id']}/close", json={"price": "60000"})).status_code == 200
    again = await client.post(f"/trades/{opened['id']}/close", json={"price": "60000"})
    assert again.status_code == 409
    assert (await client.get(f"/trades/{uuid.uuid4()}")).status_code == 404


async def test_list_filters_and_paginates(api: Api) -> None:
    client, _ = api
    ids = []
    for symbol, price, stop in [("BTCUSDT", "60000", "59000"), ("ETHUSDT", "3000", "2950"), ("XRPUSDT", "0.6", "0.59")]:
        r = await client.post("/trades", json=trade_body(symbol=symbol, price=price, stop_loss=stop))
        ids.append(r.json()["trade"]["id"])
    await client.post(f"/trades/{ids[0]}/close", json={"price": "60000"})
    assert (await client.get("/trades", params={"status": "OPEN"})).json()["total"] == 2
    closed = (await client.get("/trades", params={"status": "CLOSED"})).json()
    assert [t["id"] for t in closed["items"]] == [ids[0]]
    page = (await client.get("/trades", params={"limit": 2, "offset": 2})).json()
    assert page["total"] == 3 and len(page["items"]) == 1
    assert (await client.get("/trades", params={"status": "WHATEVER"})).status_code == 422
    assert (await client.get("/trades", params={"limit": 0})).status_code == 422


async def test_max_open_positions_override_limits_trades(api: Api) -> None:
    client, _ = api
    patch = await client.patch("/api/v2/policy/risk-profile", json={"max_open_positions": 3, "reason": "test limit"})
    assert patch.status_code == 200
    statuses = [(await client.post("/trades", json=trade_body())).status_code for _ in range(5)]
    assert statuses == [201, 201, 201, 403, 403]
    denied = await client.post("/trades", json=trade_body())
    assert denied.json()["reasons"][0]["detail"] == "MAX_OPEN_POSITIONS: open=3 max=3 profile=NORMAL"


async def test_kill_switch_and_blocklist_deny_then_release(api: Api) -> None:
    client, _ = api
    assert (
        await client.post("/api/v2/risk/kill-switch", json={"active": True, "reason": "incident"})
    ).status_code == 200
    denied = await client.post("/trades", json=trade_body())
    assert [r["code"] for r in denied.json()["reasons"]] == ["KILL_SWITCH"]
    await client.post("/api/v2/risk/kill-switch", json={"active": False, "reason": "resolved"})
    blocked = await client.put("/api/v2/risk/blocklist/BTCUSDT", json={"reason": "flash crash"})
    assert blocked.json()["blocked"] == {"BTC/USDT:USDT": "flash crash"}
    denied = await client.post("/trades", json=trade_body(symbol="BTC/USDT:USDT"))
    assert [r["code"] for r in denied.json()["reasons"]] == ["SYMBOL_BLOCKED"]
    assert (
        await client.post("/trades", json=trade_body(symbol="ETHUSDT", price="3000", stop_loss="2950"))
    ).status_code == 201
    assert (await client.delete("/api/v2/risk/blocklist/BTCUSDT")).status_code == 200
    assert (await client.delete("/api/v2/risk/blocklist/BTCUSDT")).status_code == 404
    assert (await client.put("/api/v2/risk/blocklist/FOOUSDT", json={"reason": "nope"})).status_code == 422
    assert (await client.post("/trades", json=trade_body())).status_code == 201
    kinds = [c["kind"] for c in (await client.get("/api/v2/policy/history")).json()["items"]]
    assert kinds == ["SYMBOL_UNBLOCKED", "SYMBOL_BLOCKED", "KILL_SWITCH", "KILL_SWITCH"]


async def test_the_response_shows_the_position_its_exit_plan_and_orders(api: Api) -> None:
    client, _ = api
    body = trade_body(client_order_id="shows-all", price="60000", stop_loss="58800", notional="600")
    response = await client.post("/trades", json=body)
    assert response.status_code == 201, response.text
    opened = response.json()
    trade, position, plan, orders = opened["trade"], opened["position"], opened["exit_plan"], opened["orders"]
    assert position["trade_id"] == trade["id"] and position["status"] == "OPEN"
    assert position["entry_price"] == trade["entry_price"] and position["amount"] == trade["quantity"]
    assert plan["position_id"] == position["id"] and plan["stop_price"] == "58800"
    assert [leg["kind"] for leg in plan["legs"]] == ["TP", "TP", "TP", "SL"]
    assert [(o["purpose"], o["status"]) for o in orders] == [
        ("ENTRY", "FILLED"),
        ("TP", "NEW"),
        ("TP", "NEW"),
        ("TP", "NEW"),
        ("SL", "NEW"),
    ]
    protective = {o["client_order_id"] for o in orders if o["purpose"] != "ENTRY"}
    assert protective == {leg["order_client_id"] for leg in plan["legs"]}
    assert all(o["reduce_only"] for o in orders if o["purpose"] != "ENTRY")
    # The same client_order_id again: the original answer, read back from the tables.
    again = await client.post("/trades", json=body)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    replayed = again.json()
    assert replayed["position"] == position and replayed["exit_plan"] == plan
    assert sorted(o["client_order_id"] for o in replayed["orders"]) == sorted(o["client_order_id"] for o in orders)


async def test_a_trade_following_a_stale_signal_is_denied(api: Api) -> None:
    """RiskGuard's stale-price check applies to the signal a trade follows: its age on the price feed's clock
    (the clock fills are on) against SIGNAL_MAX_AGE_SECONDS (7200 s)."""
    client, container = api
    now = container.trading.market_time()
    old = (now - timedelta(seconds=7201)).isoformat()
    denied = await client.post("/trades", json=trade_body(signal_as_of=old, source="ensemble"))
    assert denied.status_code == 403, denied.text
    reasons = denied.json()["reasons"]
    assert [r["code"] for r in reasons] == ["STALE_PRICE"]
    assert "signal_age_s=7201" in reasons[0]["detail"] and "max_s=7200" in reasons[0]["detail"]
    recent = (now - timedelta(seconds=3500)).isoformat()
    allowed = await client.post("/trades", json=trade_body(signal_as_of=recent, source="ensemble"))
    assert allowed.status_code == 201, allowed.text
    naive = await client.post("/trades", json=trade_body(signal_as_of="2025-01-01T00:00:00"))
    assert naive.status_code == 422 and "signal_as_of" in naive.text
