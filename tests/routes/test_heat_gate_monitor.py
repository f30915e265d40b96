"""The kill score and the heat gate in the position monitor: the market is read at entry and at every bar
(the signals' regime rule, from closed bars only), and a regime flip with a trend collapse closes the position
through the exit arbiter, the heat gate taking precedence over harvest's own full-close proposal."""

import math
from collections.abc import Callable
from decimal import Decimal

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.execution.paper import Bar
from app.domains.execution.reading import READING_BARS
from tests.support import QuoteFeed, running, trade_body

D = Decimal
HOUR = 3_600_000
BTC = "BTC/USDT:USDT"


def trend_bars(end_open_ms: int, count: int, start: float, drift: float) -> list[Bar]:
    """`count` consecutive 1h bars ending at `end_open_ms`: a steady drift per bar with a small alternating
    wiggle (so realized volatility is defined and small)."""
    bars: list[Bar] = []
    price = start
    for i in range(count):
        open_ms = end_open_ms - (count - 1 - i) * HOUR
        close = price * math.exp(drift + (0.0001 if i % 2 else -0.0001))
        o, c = D(f"{price:.1f}"), D(f"{close:.1f}")
        bars.append(Bar(BTC, open_ms, o, max(o, c) + D(1), min(o, c) - D(1), c))
        price = close
    return bars


async def test_a_regime_flip_closes_through_the_heat_gate(make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings())
    async with running(container) as client:
        feed = container.trading.execution.feed
        assert isinstance(feed, QuoteFeed)
        entry_bar = int(feed.now().timestamp() * 1000) // HOUR * HOUR
        history = trend_bars(entry_bar - HOUR, READING_BARS + 10, 50000.0, 0.0004)  # a steady uptrend
        for bar in history:
            feed.push(bar)
        last = history[-1].close
        feed.quote(BTC, last)

        body = trade_body(price=str(last), stop_loss=str((last * D("0.95")).quantize(D("0.1"))), notional="250")
        opened = await client.post("/trades", json=body)
        assert opened.status_code == 201, opened.text
        position = container.trading.execution.open_rows()[0]
        entry = position["harvest"]["entry"]
        assert entry["bias"] == "BULLISH" and entry["regime"] == "trending" and entry["trend_strength"] > 10

        # One bar falls 3 %: the 72-bar drift is gone (bias NEUTRAL, the trend's strength collapses), the
        # position gives back 0.6 R. The kill score jumps from ~0 to ~0.68: harvest proposes its full close
        # (kill_threshold) and the heat gate its close (K_CLOSE) in the same round; the heat gate outranks it.
        drop = last * D("0.97")
        feed.push(Bar(BTC, entry_bar, last, last + D(5), drop - D(5), drop))
        assert await container.monitor.tick() == 1

        detail = (await client.get(f"/positions/{position['id']}")).json()
        assert detail["status"] == "CLOSED"
        closes = [e for e in detail["events"] if e["kind"] == "arbiter_close"]
        assert [e["source"] for e in closes] == ["HEAT_GATE"]
        assert "kill score" in closes[0]["detail"] and "K_CLOSE" in closes[0]["detail"]
        refused = [e for e in detail["events"] if e["kind"] == "arbiter_refused"]
        assert [e["source"] for e in refused] == ["HARVEST"]
        trade = (await client.get(f"/trades/{position['trade_id']}")).json()
        assert trade["status"] == "CLOSED" and D(trade["exit_price"]) == drop.quantize(D("0.1"))


async def test_without_enough_history_there_is_no_kill_score(make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings())
    async with running(container) as client:
        feed = container.trading.execution.feed
        assert isinstance(feed, QuoteFeed)
        entry_bar = int(feed.now().timestamp() * 1000) // HOUR * HOUR
        for bar in trend_bars(entry_bar - HOUR, 50, 50000.0, 0.0004):  # too few bars for a reading
            feed.push(bar)
        last = feed.bars[BTC][-1].close
        feed.quote(BTC, last)
        body = trade_body(price=str(last), stop_loss=str((last * D("0.95")).quantize(D("0.1"))), notional="250")
        assert (await client.post("/trades", json=body)).status_code == 201
        position = container.trading.execution.open_rows()[0]
        assert position["harvest"]["entry"] is None
        drop = last * D("0.97")
        feed.push(Bar(BTC, entry_bar, last, last + D(5), drop - D(5), drop))
        assert await container.monitor.tick() == 1
        detail = (await client.get(f"/positions/{position['id']}")).json()
        assert detail["status"] == "OPEN"  # no reading, no kill score: only the stop and targets act
        assert not [e for e in detail["events"] if e["source"] in ("HEAT_GATE", "HARVEST")]
