"""With EXIT_ATR_BARS, the order flow gives the Exit Brain the ATR of the feed's last closed 1h bars
(only bars closed by now: no look-ahead), and the plan's distances follow it."""

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import Any

import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.execution.feed import ReplayPriceFeed
from app.domains.markets.marketdata import ReplayMarketData
from tests.support import running, trade_body

pytestmark = pytest.mark.replay_feed
D = Decimal
START = datetime(2024, 3, 1, 16, tzinfo=UTC)
HOUR = 3_600_000


def tick(price: Decimal) -> Decimal:
    return price.quantize(D("0.1"), rounding=ROUND_HALF_UP)


def position_row(container: Container) -> dict[str, Any]:
    rows = container.trading.execution.open_rows()
    assert len(rows) == 1
    return rows[0]


async def test_the_plan_follows_the_atr_of_closed_bars_only(make_settings: Callable[..., Settings]) -> None:
    data = ReplayMarketData(None)
    feed = ReplayPriceFeed(data, START, speed=1.0, monotonic=lambda: 0.0)
    container = bootstrap(make_settings(exit_atr_bars=14), price_feed=feed)
    async with running(container) as client:
        opened = await client.post("/trades", json=trade_body(price=None, stop_loss=None, notional="500"))
        assert opened.status_code == 201, opened.text
        entry = D(opened.json()["trade"]["entry_price"])
        # The 15 bars closed by 16:00 (01:00 .. 15:00): 14 true ranges. The 16:00 bar is not closed yet.
        end = int(START.timestamp() * 1000)
        candles = await data.candles("BTC/USDT:USDT", "1h", end - 15 * HOUR, end)
        assert len(candles) == 15 and int(candles.timestamp[-1]) == end - HOUR
        bars = [
            (D(repr(float(h))), D(repr(float(lo))), D(repr(float(c))))
            for h, lo, c in zip(candles.high, candles.low, candles.close, strict=True)
        ]
        ranges = [max(h - lo, abs(h - pc), abs(lo - pc)) for (_, _, pc), (h, lo, _) in pairwise(bars)]
        atr = sum(ranges, D(0)) / 14
        position = (await client.get("/positions")).json()["items"][0]
        plan = (await client.get(f"/positions/{position['id']}/exit-plan")).json()
        legs = {leg["kind"] + str(leg["seq"]): D(leg["trigger_price"]) for leg in plan["legs"]}
        vol = atr / entry
        assert D("0.002") < vol < D("0.02")  # an ordinary hour: the ATR, not the floor, sets the distances
        # The market read at entry (the signals' regime rule on the closed bars) scales the dynamic targets:
        # 15:00 on 2024-03-01 reads RANGING, take-profits at 0.8x (trending 1.25x, volatile 1x).
        reading = position_row(container)["harvest"]["entry"]
        assert reading["regime"] == "ranging"
        scale = D("0.8")
        assert legs["TP0"] == tick(entry * (1 + D("1.95") * vol * scale))
        assert legs["TP1"] == tick(entry * (1 + D("3.25") * vol * scale))
        assert legs["TP2"] == tick(entry * (1 + D("5.20") * vol * scale))
        assert legs["SL3"] == tick(entry * (1 - 2 * vol))
        assert legs["SL3"] != tick(entry * D("0.98"))  # not the static ladder
