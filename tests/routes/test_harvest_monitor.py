"""Harvest in the position monitor: partials at T1 R and the break-even lock go through the exit
arbiter with the trailing stop, in one round per bar (the stop has precedence)."""

from collections.abc import Callable
from decimal import Decimal

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.execution.paper import Bar
from tests.support import QuoteFeed, running, trade_body

D = Decimal
HOUR = 3_600_000


async def test_t1_partial_and_the_trailing_stop_in_one_round(make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings())
    async with running(container) as client:
        feed = container.trading.execution.feed
        assert isinstance(feed, QuoteFeed)
        # Entry 60,000, stop 59,700: the initial risk R is 300 per BTC. 0.004 BTC (250 USDT truncated).
        body = trade_body(price="60000", stop_loss="59700", notional="250", leverage="2")
        opened = await client.post("/trades", json=body)
        assert opened.status_code == 201, opened.text
        assert D(opened.json()["trade"]["quantity"]) == D("0.004")
        position = container.trading.execution.open_rows()[0]
        # One bar: high 60,700 (TP1 at +1.95 % = 61,170 is not reached), close 60,650 = +2.17 R.
        # - the trailing stop arms (best 60,700 > entry +1 %) at 60,700 x 0.995 = 60,396.5: a MOVE_STOP (STOP);
        # - harvest: T1 (2 R) -> PARTIAL_25, down to 75 % of 0.004: REDUCE 0.001 at the close;
        #   lock (1.5 R) -> UPDATE_SL to break-even + fees, refused: the stop's move outranks it this round.
        feed.push(Bar("BTC/USDT:USDT", position["last_bar_ms"] + HOUR, D(60000), D(60700), D(60300), D(60650)))
        assert await container.monitor.tick() == 1

        detail = (await client.get(f"/positions/{position['id']}")).json()
        assert (detail["status"], D(detail["amount"]), D(detail["stop_price"])) == ("OPEN", D("0.003"), D("60396.5"))
        events = [(e["kind"], e["source"]) for e in detail["events"]]
        assert ("arbiter_move_stop", "STOP") in events and ("arbiter_reduce", "HARVEST") in events
        refused = [e for e in detail["events"] if e["kind"] == "arbiter_refused"]
        assert [e["source"] for e in refused] == ["HARVEST"]
        assert refused[0]["detail"] == "a stop move of higher precedence was taken this round"
        reduce = detail["fills"][-1]
        # 0.001 x (60,650 - 60,000) - 0.001 x 60,650 x 0.0004 = 0.65 - 0.02426
        assert (D(reduce["price"]), D(reduce["amount"]), D(reduce["realized_pnl"])) == (
            D(60650),
            D("0.001"),
            D("0.62574"),
        )
        # The same bar again (a restart re-reading it) changes nothing: harvest fired once, the cursor moved.
        assert await container.monitor.tick() == 0
        again = (await client.get(f"/positions/{position['id']}")).json()
        assert again["fills"] == detail["fills"] and again["events"] == detail["events"]
