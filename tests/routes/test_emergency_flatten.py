"""A SafetyGovernor emergency closes every open position at the market through the exit arbiter
(source EMERGENCY), recorded on each position; new positions stay refused until an operator resets."""

from collections.abc import Callable
from decimal import Decimal

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.execution.paper import Bar
from tests.support import QuoteFeed, running, trade_body

D = Decimal
HOUR = 3_600_000


async def test_an_emergency_closes_every_position_through_the_arbiter(make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings(paper_starting_balance="1000"))
    async with running(container) as client:
        feed = container.trading.execution.feed
        assert isinstance(feed, QuoteFeed)
        # Emergency at a 0.5 % daily drawdown (halt at 0.4 %), so a small move trips it without a stop filling.
        patched = await client.patch(
            "/api/v2/policy/risk-profile",
            json={"max_daily_drawdown_pct": 0.4, "emergency_drawdown_pct": 0.5, "reason": "emergency test"},
        )
        assert patched.status_code == 200, patched.text
        opened = []
        for symbol, price in (("BTCUSDT", "60000"), ("ETHUSDT", "3000")):
            body = trade_body(symbol=symbol, price=price, stop_loss=None, notional="450", leverage="2")
            response = await client.post("/trades", json=body)
            assert response.status_code == 201, response.text
            opened.append(response.json()["trade"])
        btc = next(p for p in container.trading.execution.open_rows() if p["symbol"] == "BTC/USDT:USDT")
        # A BTC bar down 1.5 % (above the -2 % stop): 0.0075 BTC x 900 = -6.75 USDT marked, 0.68 % of 1000.
        at = btc["last_bar_ms"] + HOUR
        feed.push(Bar("BTC/USDT:USDT", at, D(60000), D(60000), D(59100), D(59100)))
        assert await container.monitor.tick() == 1

        positions = (await client.get("/positions")).json()["items"]
        assert {p["status"] for p in positions} == {"CLOSED"}
        for position in positions:
            detail = (await client.get(f"/positions/{position['id']}")).json()
            closes = [e for e in detail["events"] if e["kind"] == "arbiter_close"]
            assert [e["source"] for e in closes] == ["EMERGENCY"]
            assert closes[0]["detail"].startswith("SafetyGovernor emergency: emergency: daily drawdown")
        # Each closed at its mark: BTC at the bar's close, ETH at its last price.
        exits = {t["symbol"]: D(t["exit_price"]) for t in (await client.get("/trades")).json()["items"]}
        assert exits == {"BTC/USDT:USDT": D(59100), "ETH/USDT:USDT": D(3000)}
        account = (await client.get("/api/v2/account")).json()
        assert account["open_positions"] == 0 and D(account["unrealized_pnl"]) == 0
        safety = (await client.get("/api/v2/safety/status")).json()
        assert safety["emergency"] is True
        denied = await client.post("/trades", json=trade_body(stop_loss=None, notional="100"))
        assert denied.status_code == 403 and "SAFETY_HALTED" in [r["code"] for r in denied.json()["reasons"]]
