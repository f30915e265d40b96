"""GET /api/strategy/recommendations on the embedded app: trades opened and closed through the API."""

import math
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from tests.support import FakeClock, running, trade_body

Api = tuple[httpx.AsyncClient, Container]
URL = "/api/strategy/recommendations"

# A LONG of 250 USDT at 60000: quantity 0.004, notional 240, margin 120 (leverage 2), entry fee 0.096.
# Closed at p: pnl = (p - 60000) * 0.004 - 0.096 - p * 0.004 * 0.0004.
PNL = {"61000": Decimal("3.8064"), "62000": Decimal("7.8048"), "59500": Decimal("-2.1912")}


async def round_trip(client: httpx.AsyncClient, source: str | None, close_at: str) -> Decimal:
    opened = await client.post("/trades", json=trade_body(source=source))
    assert opened.status_code == 201, opened.text
    closed = await client.post(f"/trades/{opened.json()['trade']['id']}/close", json={"price": close_at})
    assert closed.status_code == 200, closed.text
    pnl = Decimal(closed.json()["realized_pnl"])
    assert pnl == PNL[close_at]
    return pnl


@pytest.fixture
async def api3(make_settings: Callable[..., Settings], clock: FakeClock) -> AsyncIterator[Api]:
    """The embedded app with STRATEGY_MIN_TRADES=3."""
    container = bootstrap(make_settings(strategy_min_trades=3), clock=clock)
    async with running(container) as client:
        yield client, container


async def test_no_closed_trades_no_recommendation(api: Api) -> None:
    client, _ = api
    await client.post("/trades", json=trade_body(source="ensemble"))  # open: not counted
    body = (await client.get(URL)).json()
    assert body["strategies"] == [] and body["min_trades"] == 30
    assert body["primary"] is None and body["fallbacks"] == [] and body["disable"] == []
    assert body["ensemble"]["weights"] == {} and body["ensemble"]["min_trades"] == 30
    assert "no strategy has at least 30 closed trades" in body["ensemble"]["reason"]
    assert body["starting_balance"] == "10000"
    assert "365" in body["definitions"]["trades_per_year"]


async def test_too_few_trades_are_listed_unqualified_without_invented_numbers(api: Api, clock: FakeClock) -> None:
    client, _ = api
    await round_trip(client, "ensemble", "61000")
    await round_trip(client, None, "59500")
    response = await client.get(URL)
    assert response.status_code == 200
    body = response.json()
    by_name = {s["strategy"]: s for s in body["strategies"]}
    assert set(by_name) == {"ensemble", "manual"}  # no source: grouped as manual
    ensemble = by_name["ensemble"]
    assert ensemble["qualified"] is False
    assert ensemble["qualified_reason"].startswith("only 1 closed trades, fewer than the minimum 30")
    assert ensemble["trades"] == 1 and ensemble["win_rate"] == 1.0
    assert ensemble["net_pnl"] == ensemble["expectancy"] == "3.8064"
    assert ensemble["mean_return"] == pytest.approx(3.8064 / 120)
    assert ensemble["sharpe"] is None and ensemble["sortino"] is None and ensemble["profit_factor"] is None
    assert any("one trade" in n for n in ensemble["notes"])
    assert by_name["manual"]["profit_factor"] == 0.0 and by_name["manual"]["max_drawdown"] == "2.1912"
    assert body["primary"] is None and body["ensemble"]["weights"] == {}


async def test_recommendations_from_closed_trades(api3: Api, clock: FakeClock) -> None:
    client, _ = api3
    plan = {  # per day, one close of each source
        "trend": ["61000", "59500", "61000"],
        "breakout": ["62000", "59500", "62000"],
        "meanrev": ["59500", "59500", "61000"],
    }
    for day in range(3):
        for source, prices in plan.items():
            await round_trip(client, source, prices[day])
        clock.advance(days=1)
    await round_trip(client, None, "61000")  # one manual trade: below the minimum of 3

    body = (await client.get(URL)).json()
    assert body["min_trades"] == 3
    by_name = {s["strategy"]: s for s in body["strategies"]}
    assert [s["strategy"] for s in body["strategies"]] == ["breakout", "meanrev", "trend", "manual"]

    # trend: pnl 3.8064, -2.1912, 3.8064 on margin 120; closes 1 day apart: N = 2 * 365 / 2 = 365
    trend = by_name["trend"]
    assert (trend["trades"], trend["wins"], trend["losses"]) == (3, 2, 1)
    assert trend["win_rate"] == pytest.approx(2 / 3)
    assert trend["gross_profit"] == "7.6128" and trend["gross_loss"] == "2.1912"
    assert trend["profit_factor"] == pytest.approx(7.6128 / 2.1912)
    assert trend["expectancy"] == "1.8072"  # 3.8064 * 2/3 - 2.1912 * 1/3
    assert trend["trades_per_year"] == pytest.approx(365.0)
    r = [3.8064 / 120, -2.1912 / 120, 3.8064 / 120]
    mean = sum(r) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    downside = math.sqrt((2.1912 / 120) ** 2 / 3)
    assert trend["sharpe"] == pytest.approx(mean / std * math.sqrt(365))
    assert trend["sortino"] == pytest.approx(mean / downside * math.sqrt(365))
    assert trend["max_drawdown"] == "2.1912"
    assert trend["max_drawdown_pct"] == pytest.approx(2.1912 / 10003.8064 * 100)

    # meanrev: -2.1912 * 2 + 3.8064 = -0.576: negative expectancy, profit factor < 1 -> disable
    meanrev = by_name["meanrev"]
    assert meanrev["expectancy"] == "-0.192" and meanrev["net_pnl"] == "-0.576"
    assert meanrev["max_drawdown"] == "4.3824"
    assert body["disable"] == [
        {
            "strategy": "meanrev",
            "reason": f"expectancy -0.192 USDT per trade < 0; profit factor {3.8064 / 4.3824:.4g} < 1",
        }
    ]

    # breakout and trend have the same downside deviation and N: Sortino in the ratio of the mean pnl
    assert body["primary"] == "breakout" and body["fallbacks"] == ["trend"]
    weights = body["ensemble"]["weights"]
    assert weights == {"breakout": pytest.approx(4.4728 / 6.28), "trend": pytest.approx(1.8072 / 6.28)}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert by_name["manual"]["qualified"] is False
    assert "minimum sample 3 trades" in body["ensemble"]["reason"]
