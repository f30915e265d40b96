"""Positions through the API on the REAL replay feed (the bundled BTC/USDT:USDT 1h candles of 2024-03-01).

The feed runs on a controllable monotonic clock at speed 3600 (1 "second" = 1 simulated hour); the
test advances it one hour at a time and calls `container.monitor.tick()` to apply the bars that closed.
PAPER_SLIPPAGE_PCT is the real 0.02 %, the taker fee 0.04 %. Every expected figure is computed by hand
from the candles (open / high / low / close, UTC):

    01:00 C 61294.4                          15:00 C 61335.3
    02:00 C 61063.9                          16:00 O 61335.4 H 61700.1 L 61312.1 C 61490.0 (funding 0.0004601)
    03:00 H 61318.3 L 60844.8 C 61183.4      17:00 O 61490.0 H 62172.2 L 61490.0 C 61977.0
    04:00 H 61623.7 L 61135.0 C 61613.1      18:00 O 61976.9 H 62556.3 L 61889.0 C 62402.8
    05:00 H 61634.5 L 61364.6 C 61385.9      19:00 O 62402.7 H 62434.3 L 62030.2 C 62270.5
    06:00 H 61856.7 L 61275.8 C 61625.8
    07:00 O 61625.8 H 61844.8 L 61435.2 C 61485.8
    08:00 O 61485.9 H 62332.0 L 61385.5 C 61980.0 (funding 0.00064824)
    09:00 O 61980.0 H 62270.1 L 61915.0 C 62200.1

Most tests pass the feed's simulated clock to `bootstrap(clock=...)`: with the default wall clock the
monitor cannot apply any bar of the replay (see `test_with_the_default_wall_clock_the_monitor_applies_the_replay`).
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.execution.feed import ReplayPriceFeed
from app.domains.markets.marketdata import ReplayMarketData
from tests.support import running, trade_body

pytestmark = pytest.mark.replay_feed

D = Decimal
BTC = "BTC/USDT:USDT"
FEE = D("0.0004")
SLIP = D("0.0002")


class Monotonic:
    """The feed's monotonic clock: at speed 3600, +1 = one simulated hour."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


Env = tuple[httpx.AsyncClient, Container, Monotonic]


@asynccontextmanager
async def replay(
    make_settings: Callable[..., Settings], start: datetime, *, feed_clock: bool = True
) -> AsyncIterator[Env]:
    wall = Monotonic()
    feed = ReplayPriceFeed(ReplayMarketData(None), start, speed=3600, monotonic=wall)
    # The monitor's own timer ticks once at start (nothing open), then the test drives it.
    settings = make_settings(paper_slippage_pct="0.02", monitor_interval_seconds=3600)
    extra: dict[str, Any] = {"clock": feed.now} if feed_clock else {}
    container = bootstrap(settings, price_feed=feed, **extra)
    async with running(container) as client:
        # ~3,100 USDT (0.05 BTC) is above NORMAL's 1,000 USDT position cap: raise the cap.
        raised = await client.patch(
            "/api/v2/policy/risk-profile", json={"position_size_cap_usd": 5000, "reason": "replay scenario"}
        )
        assert raised.status_code == 200, raised.text
        yield client, container, wall


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, 1, hour, minute, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def open_long(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = trade_body(price=None, stop_loss=None, notional="3100", leverage="5", **overrides)
    response = await client.post("/trades", json=body)
    assert response.status_code == 201, response.text
    trade: dict[str, Any] = response.json()["trade"]
    return trade


async def position_of(client: httpx.AsyncClient, trade_id: str) -> dict[str, Any]:
    items = (await client.get("/positions", params={"limit": 200})).json()["items"]
    (position,) = [p for p in items if p["trade_id"] == trade_id]
    detail = (await client.get(f"/positions/{position['id']}")).json()
    assert isinstance(detail, dict)
    return detail


async def hour_passes(container: Container, wall: Monotonic) -> int:
    wall.value += 1
    applied: int = await container.monitor.tick()
    return applied


async def orders_of(client: httpx.AsyncClient, position_id: str) -> list[dict[str, Any]]:
    page = (await client.get("/orders", params={"position_id": position_id, "limit": 200})).json()
    items: list[dict[str, Any]] = page["items"]
    return items


def tick(price: Decimal) -> Decimal:
    """Round to BTC/USDT:USDT's 0.1 tick (none of the figures below sits on a half tick)."""
    return price.quantize(D("0.1"))


async def test_a_market_long_is_filled_by_the_feed_planned_and_closed_by_its_trailing_stop(
    make_settings: Callable[..., Settings],
) -> None:
    """Opened at 03:00: the trailing stop arms on the 06:00 candle (high 61,856.7 > entry +1 %), is set
    0.5 % behind it at 61,547.4, and the 07:00 candle (low 61,435.2) fills it. The position closes before
    the 08:00 funding and before TP1 (62,267.1) is ever reached."""
    async with replay(make_settings, at(3)) as (client, container, wall):
        trade = await open_long(client)
        # The feed's price at 03:00 is the 02:00 close 61,063.9; a market buy pays 0.02 % more:
        # 61,063.9 x 1.0002 = 61,076.11278 -> 61,076.1. 3,100 / 61,063.9 = 0.0507.. -> 0.05 (0.001 step).
        entry = tick(D("61063.9") * (1 + SLIP))
        assert entry == D("61076.1")
        entry_fee = D("0.05") * entry * FEE  # 1.221522
        assert (D(trade["entry_price"]), D(trade["quantity"]), D(trade["entry_fee"])) == (entry, D("0.05"), entry_fee)
        assert trade["status"] == "OPEN" and trade["opened_at"] == "2024-03-01T03:00:00Z"

        listed = (await client.get("/positions")).json()
        assert listed["total"] == 1
        position = listed["items"][0]
        assert (position["trade_id"], position["status"], position["side"], position["symbol"]) == (
            trade["id"],
            "OPEN",
            "LONG",
            BTC,
        )
        assert (D(position["amount"]), D(position["entry_price"]), D(position["realized_pnl"])) == (
            D("0.05"),
            entry,
            -entry_fee,
        )
        assert D(position["mark_price"]) == D("61063.9")
        assert D(position["unrealized_pnl"]) == D("0.05") * (D("61063.9") - entry)  # -0.61
        assert (await client.get("/positions", params={"status": "CLOSED"})).json()["total"] == 0
        account = (await client.get("/api/v2/account")).json()
        assert D(account["balance"]) == D(10000) - entry_fee
        assert D(account["equity"]) == D(10000) - entry_fee + D("-0.61")

        plan = (await client.get(f"/positions/{position['id']}/exit-plan")).json()
        legs = [(leg["kind"], D(leg["trigger_price"]), D(leg["quantity"]), leg["status"]) for leg in plan["legs"]]
        tp1, tp2, tp3, sl = (tick(entry * f) for f in (D("1.0195"), D("1.0325"), D("1.052"), D("0.98")))
        assert (tp1, tp2, tp3, sl) == (D("62267.1"), D("63061.1"), D("64252.1"), D("59854.6"))
        assert legs == [
            ("TP", tp1, D("0.015"), "ACTIVE"),  # 30 %
            ("TP", tp2, D("0.015"), "ACTIVE"),  # 30 %
            ("TP", tp3, D("0.02"), "ACTIVE"),  # 40 %
            ("SL", sl, D("0.05"), "ACTIVE"),  # the whole position
        ]
        assert D(plan["entry_price"]) == entry and D(plan["stop_price"]) == sl
        assert plan["trailing"]["stop_price"] is None  # not armed yet

        orders = await orders_of(client, position["id"])
        by_purpose = sorted((o["purpose"], o["type"], o["side"], D(o["amount"]), o["status"]) for o in orders)
        assert by_purpose == [
            ("ENTRY", "MARKET", "BUY", D("0.05"), "FILLED"),
            ("SL", "STOP_MARKET", "SELL", D("0.05"), "NEW"),
            ("TP", "TAKE_PROFIT_MARKET", "SELL", D("0.015"), "NEW"),
            ("TP", "TAKE_PROFIT_MARKET", "SELL", D("0.015"), "NEW"),
            ("TP", "TAKE_PROFIT_MARKET", "SELL", D("0.02"), "NEW"),
        ]
        assert all(o["reduce_only"] for o in orders if o["purpose"] != "ENTRY")
        legs_by_order = {leg["order_client_id"]: D(leg["trigger_price"]) for leg in plan["legs"]}
        assert {o["client_order_id"]: D(o["stop_price"]) for o in orders if o["purpose"] != "ENTRY"} == legs_by_order
        (entry_order,) = [o for o in orders if o["purpose"] == "ENTRY"]
        assert D(entry_order["average_price"]) == entry

        # 04:00, 05:00, 06:00: the 03:00, 04:00, 05:00 candles: highs below entry +1 % (61,686.861).
        for hour in (4, 5, 6):
            assert await hour_passes(container, wall) == 1
            now = await position_of(client, trade["id"])
            assert (now["status"], D(now["stop_price"]), now["events"]) == ("OPEN", sl, []), hour

        # 07:00: the 06:00 candle's high 61,856.7 arms the trailing stop: 61,856.7 x 0.995 = 61,547.4165,
        # below the candle's close 61,625.8, so the arbiter takes the move.
        assert await hour_passes(container, wall) == 1
        trailed = tick(D("61856.7") * D("0.995"))
        assert trailed == D("61547.4")
        now = await position_of(client, trade["id"])
        assert (now["status"], D(now["stop_price"])) == ("OPEN", trailed)
        assert [(e["kind"], e["source"]) for e in now["events"]] == [("arbiter_move_stop", "STOP")]
        orders = await orders_of(client, position["id"])
        stops = sorted((o["status"], D(o["stop_price"]), D(o["amount"])) for o in orders if o["purpose"] == "SL")
        assert stops == [("CANCELED", sl, D("0.05")), ("NEW", trailed, D("0.05"))]
        plan = (await client.get(f"/positions/{position['id']}/exit-plan")).json()
        (sl_leg,) = [leg for leg in plan["legs"] if leg["kind"] == "SL"]
        assert (D(sl_leg["trigger_price"]), sl_leg["status"]) == (trailed, "ACTIVE")
        assert D(plan["trailing"]["best_price"]) == D("61856.7")

        # 08:00: the 07:00 candle (open 61,625.8, low 61,435.2) reaches the stop: it fills at the stop
        # less 0.02 %: 61,547.4 x 0.9998 = 61,535.09052 -> 61,535.1.
        assert await hour_passes(container, wall) == 1
        exit_price = tick(trailed * (1 - SLIP))
        assert exit_price == D("61535.1")
        exit_fee = D("0.05") * exit_price * FEE  # 1.230702
        stop_pnl = D("0.05") * (exit_price - entry) - exit_fee  # 22.95 - 1.230702 = 21.719298
        realized = stop_pnl - entry_fee  # 20.497776
        assert realized == D("20.497776")
        closed = await position_of(client, trade["id"])
        assert (closed["status"], D(closed["amount"]), D(closed["realized_pnl"])) == ("CLOSED", D(0), realized)
        assert (D(closed["funding"]), D(closed["fees"])) == (D(0), entry_fee + exit_fee)
        assert closed["closed_at"] == "2024-03-01T08:00:00Z" and closed["close_reason"] == "SL"
        assert [(D(f["price"]), D(f["amount"]), D(f["fee"]), D(f["realized_pnl"])) for f in closed["fills"]] == [
            (entry, D("0.05"), entry_fee, -entry_fee),
            (exit_price, D("0.05"), exit_fee, stop_pnl),
        ]
        assert "funding" not in [e["kind"] for e in closed["events"]]  # closed before the 08:00 settlement
        statuses = sorted((o["purpose"], o["status"]) for o in await orders_of(client, position["id"]))
        assert statuses == [
            ("ENTRY", "FILLED"),
            ("SL", "CANCELED"),
            ("SL", "FILLED"),
            ("TP", "EXPIRED"),
            ("TP", "EXPIRED"),
            ("TP", "EXPIRED"),
        ]
        plan = (await client.get(f"/positions/{position['id']}/exit-plan")).json()
        assert sorted((leg["kind"], leg["status"]) for leg in plan["legs"]) == [
            ("SL", "FILLED"),
            ("TP", "EXPIRED"),
            ("TP", "EXPIRED"),
            ("TP", "EXPIRED"),
        ]

        stored = (await client.get(f"/trades/{trade['id']}")).json()
        assert (stored["status"], D(stored["realized_pnl"])) == ("CLOSED", realized)
        assert (D(stored["exit_price"]), D(stored["exit_fee"])) == (exit_price, exit_fee)
        account = (await client.get("/api/v2/account")).json()
        assert D(account["equity"]) == D(account["balance"]) == D(10000) + realized
        assert (account["open_positions"], D(account["open_notional"]), D(account["used_margin"])) == (0, D(0), D(0))
        assert (await client.get("/positions", params={"status": "OPEN"})).json()["total"] == 0

        # Nothing is held any more: later hours apply nothing and change nothing.
        assert await hour_passes(container, wall) == 0
        assert (await position_of(client, trade["id"]))["fills"] == closed["fills"]


async def test_funding_on_the_whole_amount_then_tp1_then_the_trailing_stop_on_real_candles(
    make_settings: Callable[..., Settings],
) -> None:
    """Opened at 16:00 (the 15:00 close 61,335.3), the instant funding settles: it enters at the settlement,
    so it is not charged (a position held through one is: see the paper exchange's scripted test). The
    trailing stop arms on the 17:00 candle, TP1 (30 %) fills in the 18:00 candle and the stop trails again,
    and the 19:00 candle fills the stop for the remaining 0.035."""
    async with replay(make_settings, at(16)) as (client, container, wall):
        trade = await open_long(client)
        entry = tick(D("61335.3") * (1 + SLIP))  # 61,347.56706 -> 61,347.6
        assert D(trade["entry_price"]) == entry == D("61347.6") and D(trade["quantity"]) == D("0.05")
        entry_fee = D("0.05") * entry * FEE  # 1.226952
        position = await position_of(client, trade["id"])
        pid = position["id"]
        tp1 = tick(entry * D("1.0195"))  # 62,543.8782 -> 62,543.9
        sl = tick(entry * D("0.98"))  # 60,120.648 -> 60,120.6
        assert (tp1, sl) == (D("62543.9"), D("60120.6"))

        # 17:00: the 16:00 candle. Its funding (0.0004601 at 16:00) settled as the position entered: not
        # charged. High 61,700.1: below entry +1 % (61,961.076), nothing else happens.
        assert await hour_passes(container, wall) == 1
        funding = D(0)
        now = await position_of(client, trade["id"])
        assert now["events"] == []
        assert (D(now["funding"]), D(now["realized_pnl"]), D(now["stop_price"])) == (
            funding,
            funding - entry_fee,
            sl,
        )

        # 18:00: the 17:00 candle's high 62,172.2 arms the trailing stop: 62,172.2 x 0.995 = 61,861.339 -> 61,861.3
        # (below its close 61,977.0).
        assert await hour_passes(container, wall) == 1
        first_trail = tick(D("62172.2") * D("0.995"))
        assert first_trail == D("61861.3")
        now = await position_of(client, trade["id"])
        assert D(now["stop_price"]) == first_trail and D(now["amount"]) == D("0.05")

        # 19:00: the 18:00 candle (low 61,889.0 stays above the stop; high 62,556.3 reaches TP1): TP1 fills
        # 0.015 at 62,543.9 x 0.9998 = 62,531.39122 -> 62,531.4; then the stop trails to
        # 62,556.3 x 0.995 = 62,243.5185 -> 62,243.5 (below the close 62,402.8) for the remaining 0.035.
        assert await hour_passes(container, wall) == 1
        tp1_price = tick(tp1 * (1 - SLIP))
        assert tp1_price == D("62531.4")
        tp1_fee = D("0.015") * tp1_price * FEE  # 0.3751884
        tp1_pnl = D("0.015") * (tp1_price - entry) - tp1_fee  # 17.757 - 0.3751884 = 17.3818116
        second_trail = tick(D("62556.3") * D("0.995"))
        assert second_trail == D("62243.5")
        now = await position_of(client, trade["id"])
        assert (now["status"], D(now["amount"]), D(now["stop_price"])) == ("OPEN", D("0.035"), second_trail)
        assert [(D(f["price"]), D(f["amount"]), D(f["realized_pnl"])) for f in now["fills"]][1:] == [
            (tp1_price, D("0.015"), tp1_pnl)
        ]
        resting = [o for o in await orders_of(client, pid) if o["status"] == "NEW"]
        assert sorted((o["purpose"], D(o["stop_price"]), D(o["amount"])) for o in resting) == [
            ("SL", second_trail, D("0.035")),  # the stop covers what is left
            ("TP", tick(entry * D("1.0325")), D("0.015")),
            ("TP", tick(entry * D("1.052")), D("0.02")),
        ]

        # 20:00: the 19:00 candle (open 62,402.7, low 62,030.2) fills the stop: 62,243.5 x 0.9998 = 62,231.0513
        # -> 62,231.1 for 0.035.
        assert await hour_passes(container, wall) == 1
        stop_price = tick(second_trail * (1 - SLIP))
        assert stop_price == D("62231.1")
        stop_fee = D("0.035") * stop_price * FEE  # 0.8712354
        stop_pnl = D("0.035") * (stop_price - entry) - stop_fee  # 30.9225 - 0.8712354 = 30.0512646
        realized = -entry_fee + funding + tp1_pnl + stop_pnl
        assert realized == D("46.20612420")
        closed = await position_of(client, trade["id"])
        assert (closed["status"], D(closed["realized_pnl"]), D(closed["funding"])) == ("CLOSED", realized, funding)
        assert D(closed["fees"]) == entry_fee + tp1_fee + stop_fee
        assert [(D(f["price"]), D(f["amount"]), D(f["realized_pnl"])) for f in closed["fills"]] == [
            (entry, D("0.05"), -entry_fee),
            (tp1_price, D("0.015"), tp1_pnl),
            (stop_price, D("0.035"), stop_pnl),
        ]
        kinds = sorted((e["kind"], e["source"]) for e in closed["events"])
        assert kinds == [("arbiter_move_stop", "STOP"), ("arbiter_move_stop", "STOP")]  # no funding: see above
        assert sum(D(f["amount"]) for f in closed["fills"][1:]) == D("0.05")  # no leg executed twice
        orders = await orders_of(client, pid)
        filled = sorted((o["purpose"], D(o["filled"])) for o in orders if o["status"] == "FILLED")
        assert filled == [("ENTRY", D("0.05")), ("SL", D("0.035")), ("TP", D("0.015"))]
        plan = (await client.get(f"/positions/{pid}/exit-plan")).json()
        assert [(leg["kind"], leg["status"]) for leg in plan["legs"]] == [
            ("TP", "FILLED"),
            ("TP", "EXPIRED"),
            ("TP", "EXPIRED"),
            ("SL", "FILLED"),
        ]
        stored = (await client.get(f"/trades/{trade['id']}")).json()
        assert (stored["status"], D(stored["realized_pnl"])) == ("CLOSED", realized)
        # exit price: the average of the closing fills (0.015 x 62,531.4 + 0.035 x 62,231.1) / 0.05 = 62,321.19
        assert D(stored["exit_price"]) == D("62321.19") and D(stored["exit_fee"]) == tp1_fee + stop_fee
        account = (await client.get("/api/v2/account")).json()
        assert D(account["equity"]) == D(10000) + realized


async def test_no_funding_is_paid_for_a_settlement_before_the_position_opened(
    make_settings: Callable[..., Settings],
) -> None:
    async with replay(make_settings, at(16, 30)) as (client, container, wall):
        trade = await open_long(client)
        assert D(trade["entry_price"]) == D("61347.6")  # still the 15:00 close: the 16:00 candle is not closed
        assert await hour_passes(container, wall) == 1  # 17:30: the 16:00 candle is applied
        position = await position_of(client, trade["id"])
        # Today: funding -1.41102088 (0.05 x 61,335.4 x 0.0004601) and a "funding" event.
        assert D(position["funding"]) == 0 and position["events"] == []


async def test_a_trailing_stop_crossed_within_its_own_bar_closes_at_the_close(
    make_settings: Callable[..., Settings],
) -> None:
    """Entered at 02:00 (61,306.7). The 08:00 candle's high 62,332.0 arms the trailing stop at
    62,332.0 x 0.995 = 62,020.3, above that candle's close 61,980.0: the price came back through the new
    stop within the bar, so the stop has fired. It is not placed above the market (the arbiter would refuse
    that, and a refused move was once lost): the position is closed at the close, 61,980.0 x 0.9998."""
    async with replay(make_settings, at(2)) as (client, container, wall):
        trade = await open_long(client)
        entry = tick(D("61294.4") * (1 + SLIP))  # the 01:00 close -> 61,306.7
        assert D(trade["entry_price"]) == entry == D("61306.7")
        for _ in range(8):  # 03:00 .. 10:00: the 02:00 .. 09:00 candles
            await hour_passes(container, wall)
        position = await position_of(client, trade["id"])
        assert position["status"] == "CLOSED"
        assert not [e for e in position["events"] if e["kind"] == "arbiter_refused"]
        closes = [e for e in position["events"] if e["kind"] == "arbiter_close"]
        assert [e["source"] for e in closes] == ["STOP"] and "crossed within the bar" in closes[0]["detail"]
        assert "62020.3" in closes[0]["detail"]
        exit_fill = position["fills"][-1]
        assert (D(exit_fill["price"]), D(exit_fill["amount"])) == (tick(D("61980.0") * (1 - SLIP)), D("0.05"))
        assert D(exit_fill["price"]) == D("61967.6")


async def test_with_the_default_wall_clock_the_monitor_applies_the_replay(
    make_settings: Callable[..., Settings],
) -> None:
    async with replay(make_settings, at(3), feed_clock=False) as (client, container, wall):
        trade = await open_long(client)
        for _ in range(5):  # the 03:00 .. 07:00 candles: the trailing stop arms on 06:00 and fills on 07:00
            await hour_passes(container, wall)
        position = await position_of(client, trade["id"])
        assert position["status"] == "CLOSED" and D(position["realized_pnl"]) == D("20.497776")


async def test_an_expected_price_far_from_the_market_is_refused_one_near_it_fills_at_the_market(
    make_settings: Callable[..., Settings],
) -> None:
    async with replay(make_settings, at(3)) as (client, _container, _wall):
        far = await client.post("/trades", json=trade_body(price="55000", stop_loss=None, notional="500"))
        assert far.status_code == 403, far.text
        body = far.json()
        assert [r["code"] for r in body["reasons"]] == ["PRICE_DEVIATION"]
        detail = body["reasons"][0]["detail"]
        assert "market=61063.9" in detail and "expected=55000" in detail  # 11.02 % away, MAX 1 %
        assert (await client.get("/positions")).json()["total"] == 0
        assert (await client.get("/orders")).json()["total"] == 0

        # Within 1 %: the exchange, not the caller, sets the fill (61,063.9 + 0.02 %, not 61,000).
        near = await client.post("/trades", json=trade_body(price="61000", stop_loss=None, notional="500"))
        assert near.status_code == 201, near.text
        assert D(near.json()["trade"]["entry_price"]) == D("61076.1")


async def test_operator_partial_then_full_close_at_the_market(make_settings: Callable[..., Settings]) -> None:
    async with replay(make_settings, at(3)) as (client, container, wall):
        trade = await open_long(client)
        entry, entry_fee = D("61076.1"), D("0.05") * D("61076.1") * FEE
        position = await position_of(client, trade["id"])
        pid = position["id"]

        assert await hour_passes(container, wall) == 1  # 04:00: the market is the 03:00 close 61,183.4
        too_far = await client.post(f"/positions/{pid}/close", json={"amount": "0.02", "price": "65000"})
        assert too_far.status_code == 409 and too_far.json()["error"] == "price_deviation", too_far.text
        assert "61183.4" in too_far.json()["detail"]
        assert D((await position_of(client, trade["id"]))["amount"]) == D("0.05")  # nothing happened

        partial = await client.post(f"/positions/{pid}/close", json={"amount": "0.02", "reason": "take some"})
        assert partial.status_code == 200, partial.text
        # A market sell gets 0.02 % less: 61,183.4 x 0.9998 = 61,171.16332 -> 61,171.2.
        first = tick(D("61183.4") * (1 - SLIP))
        first_fee = D("0.02") * first * FEE  # 0.4893696
        first_pnl = D("0.02") * (first - entry) - first_fee  # 1.902 - 0.4893696 = 1.4126304
        assert (partial.json()["status"], D(partial.json()["amount"])) == ("OPEN", D("0.03"))
        assert D(partial.json()["realized_pnl"]) == -entry_fee + first_pnl
        stops = [o for o in await orders_of(client, pid) if o["purpose"] == "SL" and o["status"] == "NEW"]
        assert [D(o["amount"]) for o in stops] == [D("0.03")]  # the stop covers what is left

        assert await hour_passes(container, wall) == 1  # 05:00: the 04:00 candle changes nothing; market 61,613.1
        full = await client.post(f"/positions/{pid}/close", json={})
        assert full.status_code == 200, full.text
        second = tick(D("61613.1") * (1 - SLIP))  # 61,600.77738 -> 61,600.8
        second_fee = D("0.03") * second * FEE  # 0.7392096
        second_pnl = D("0.03") * (second - entry) - second_fee  # 15.741 - 0.7392096 = 15.0017904
        realized = -entry_fee + first_pnl + second_pnl
        assert realized == D("15.1928988")
        assert (full.json()["status"], D(full.json()["amount"]), D(full.json()["realized_pnl"])) == (
            "CLOSED",
            D(0),
            realized,
        )

        detail = await position_of(client, trade["id"])
        orders = {o["id"]: o for o in await orders_of(client, pid)}
        closing = [(D(f["price"]), D(f["amount"]), D(f["realized_pnl"])) for f in detail["fills"][1:]]
        assert closing == [(first, D("0.02"), first_pnl), (second, D("0.03"), second_pnl)]
        assert [orders[f["order_id"]]["source"] for f in detail["fills"][1:]] == ["OPERATOR", "OPERATOR"]
        assert [orders[f["order_id"]]["purpose"] for f in detail["fills"][1:]] == ["REDUCE", "CLOSE"]
        assert sorted((e["kind"], e["source"]) for e in detail["events"]) == [
            ("arbiter_close", "OPERATOR"),
            ("arbiter_reduce", "OPERATOR"),
        ]
        assert [o["status"] for o in orders.values() if o["status"] == "NEW"] == []

        stored = (await client.get(f"/trades/{trade['id']}")).json()
        assert (stored["status"], D(stored["realized_pnl"])) == ("CLOSED", realized)
        assert D(stored["exit_price"]) == (D("0.02") * first + D("0.03") * second) / D("0.05")  # 61,428.96
        account = (await client.get("/api/v2/account")).json()
        assert D(account["equity"]) == D(10000) + realized

        again = await client.post(f"/positions/{pid}/close", json={})
        assert again.status_code == 409, again.text
        unknown = await client.post("/positions/00000000-0000-4000-8000-000000000000/close", json={})
        assert unknown.status_code == 404, unknown.text
        assert (await client.get("/positions/00000000-0000-4000-8000-000000000000")).status_code == 404
        assert (await client.get("/positions/00000000-0000-4000-8000-000000000000/exit-plan")).status_code == 404
        assert len(await orders_of(client, pid)) == len(orders)  # the refused closes placed nothing


async def test_market_prices_are_the_feeds_closes_and_symbols_without_candles_are_missing(
    make_settings: Callable[..., Settings],
) -> None:
    async with replay(make_settings, at(3)) as (client, container, wall):
        body = (await client.get("/api/v2/market/prices")).json()
        assert (body["feed"], body["now"]) == ("replay", iso(at(3)))
        prices = {p["symbol"]: D(p["price"]) for p in body["prices"]}
        assert prices == {  # the 02:00 closes
            BTC: D("61063.9"),
            "ETH/USDT:USDT": D("3370.1"),
            "ADA/USDT:USDT": D("0.6772"),
            "XRP/USDT:USDT": D("0.5923"),
            "DOGE/USDT:USDT": D("0.12156"),
        }
        missing = {m["symbol"]: m["reason"] for m in body["missing"]}
        assert set(missing) == {"LTC/USDT:USDT", "TRX/USDT:USDT"}
        assert all("no candles" in reason for reason in missing.values())

        await hour_passes(container, wall)
        later = (await client.get("/api/v2/market/prices")).json()
        assert later["now"] == iso(at(4))
        assert {p["symbol"]: D(p["price"]) for p in later["prices"]}[BTC] == D("61183.4")  # the 03:00 close


async def test_two_concurrent_full_closes_fill_once(make_settings: Callable[..., Settings]) -> None:
    async with replay(make_settings, at(3)) as (client, _container, _wall):
        trade = await open_long(client)
        pid = (await position_of(client, trade["id"]))["id"]
        first, second = await asyncio.gather(
            client.post(f"/positions/{pid}/close", json={}), client.post(f"/positions/{pid}/close", json={})
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        detail = await position_of(client, trade["id"])
        orders = {o["id"]: o for o in await orders_of(client, pid)}
        # One closing fill of 0.05 at 61,063.9 x 0.9998 = 61,051.68722 -> 61,051.7 (same simulated hour as the entry).
        assert sorted((orders[f["order_id"]]["purpose"], D(f["price"]), D(f["amount"])) for f in detail["fills"]) == [
            ("CLOSE", D("61051.7"), D("0.05")),
            ("ENTRY", D("61076.1"), D("0.05")),
        ]
        closes = [o for o in orders.values() if o["purpose"] == "CLOSE"]
        assert [(o["status"], o["source"]) for o in closes] == [("FILLED", "OPERATOR")]
