"""The paper exchange on real bundled candles: the exchange sets every fill price.

Scripted scenario (BTC/USDT:USDT, Binance 1h candles of 2024-03-01, read from ../shared):
open a 0.05 BTC long at 03:00 UTC, TP1 (30 %) at +1.95 %, stop at -2 %; the 08:00 candle first
settles funding at its open (on the whole 0.05), then its high reaches TP1; the stop is then trailed
to 61,700 and fills in the 14:00 candle. Every expected number below is computed by hand from the candles.
"""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.domains.execution.exchange import InsufficientMargin, OrderRequest, OrderSide, OrderStatus, OrderType
from app.domains.execution.feed import ReplayPriceFeed
from app.domains.execution.paper import Bar, PaperBook
from app.domains.markets.marketdata import ReplayMarketData

D = Decimal
BTC = "BTC/USDT:USDT"
T0 = datetime(2024, 3, 1, 3, tzinfo=UTC)


class Monotonic:
    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def order(
    cid: str, side: OrderSide, kind: OrderType, amount: str, stop: str | None = None, **kw: object
) -> OrderRequest:
    return OrderRequest(
        cid, BTC, side, kind, D(amount), stop_price=D(stop) if stop else None, reduce_only=kind is not OrderType.MARKET
    )


async def test_scripted_long_tp1_trailing_stop_and_funding_on_real_candles() -> None:
    wall = Monotonic()
    feed = ReplayPriceFeed(ReplayMarketData(None), T0, speed=3600, monotonic=wall)  # 1 s = 1 h
    book = PaperBook(balance=D(10000), clock=feed.now)
    book.set_leverage(BTC, 5)

    # The 02:00 candle closed at 61,063.9: a market buy fills 0.02 % worse, rounded to the 0.1 tick.
    assert await feed.price(BTC) == D("61063.9")
    entry, _ = book.submit(order("entry", OrderSide.BUY, OrderType.MARKET, "0.05"), await feed.price(BTC))
    assert entry.status is OrderStatus.FILLED and entry.average_price == D("61076.1")  # 61,076.11278
    book.submit(order("tp1", OrderSide.SELL, OrderType.TAKE_PROFIT_MARKET, "0.015", "62267.1"), D(0))  # +1.95 %
    book.submit(order("sl", OrderSide.SELL, OrderType.STOP_MARKET, "0.05", "59854.6"), D(0))  # -2 %

    last_open = int(datetime(2024, 3, 1, 2, tzinfo=UTC).timestamp() * 1000)
    events = []
    trailed = False
    for _ in range(20):
        wall.value += 1
        for bar in await feed.closed_bars(BTC, last_open):
            last_open = bar.open_ms
            happened = book.on_bar(bar, await feed.funding_rate(BTC, bar.open_ms))
            events += [(bar.open_ms, e) for e in happened]
            if not trailed and book.orders["tp1"].status is OrderStatus.FILLED:
                book.cancel("sl")
                book.submit(order("sl-trail", OrderSide.SELL, OrderType.STOP_MARKET, "0.035", "61700.0"), D(0))
                trailed = True
        if BTC not in book.positions:
            break

    def hour(ms: int) -> int:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).hour

    kinds = [(hour(at), e.kind, e.fill.price if e.fill else None) for at, e in events]
    assert kinds == [
        (8, "funding", None),  # rate 0.00064824 at 08:00, mark = the 08:00 open 61,485.9
        (8, "fill", D("62254.6")),  # TP1: the 08:00 high 62,332.0 reaches 62,267.1; 0.02 % slippage
        (14, "fill", D("61687.7")),  # the 14:00 low 61,585.1 reaches the trailed stop 61,700.0
    ]
    funding, tp1, stop = (e for _, e in events)
    assert funding.realized_pnl == D("-1.99288099")  # -0.05 x 61,485.9 x 0.00064824 = -1.99288099080
    assert tp1.realized_pnl == D("17.30397240")  # 0.015 x (62,254.6 - 61,076.1) - 0.015 x 62,254.6 x 0.0004
    assert stop.realized_pnl == D("20.54237220")  # 0.035 x (61,687.7 - 61,076.1) - 0.035 x 61,687.7 x 0.0004
    # Entry fee 0.05 x 61,076.1 x 0.0004 = 1.221522; the position's realized PnL is net of all of it.
    assert book.balance == D(10000) - D("1.2215220") + D("17.30397240") + D("20.54237220") - D("1.99288099")
    assert book.orders["sl"].status is OrderStatus.CANCELED and not book.open_orders()


def bar(o: str, h: str, low: str, c: str, open_ms: int = 0) -> Bar:
    return Bar(BTC, open_ms, D(o), D(h), D(low), D(c))


def long_with_exits(leverage: int = 5) -> PaperBook:
    book = PaperBook(balance=D(10000), clock=lambda: T0)
    book.set_leverage(BTC, leverage)
    book.submit(order("entry", OrderSide.BUY, OrderType.MARKET, "0.1"), D(60000))  # fills at 60,012.0
    book.submit(order("tp", OrderSide.SELL, OrderType.TAKE_PROFIT_MARKET, "0.1", "61000"), D(0))
    book.submit(order("sl", OrderSide.SELL, OrderType.STOP_MARKET, "0.1", "59000"), D(0))
    return book


def test_when_stop_and_take_profit_are_both_inside_one_candle_the_stop_fills_first() -> None:
    book = long_with_exits()
    events = book.on_bar(bar("60000", "61500", "58500", "60500"))
    assert [(e.kind, e.fill.price if e.fill else None) for e in events] == [
        ("fill", D("58988.2")),  # 59,000 - 0.02 %
        ("expired", None),  # the take-profit: nothing left to reduce
    ]
    assert book.orders["sl"].status is OrderStatus.FILLED
    assert book.orders["tp"].status is OrderStatus.EXPIRED and book.orders["tp"].reason == "position closed"
    assert BTC not in book.positions


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    book = long_with_exits()
    events = book.on_bar(bar("58000", "58200", "57500", "58100"))
    assert events[0].fill is not None and events[0].fill.price == D("57988.4")  # the open 58,000 - 0.02 %


def test_a_take_profit_alone_fills_at_its_trigger_and_a_short_mirrors() -> None:
    book = long_with_exits()
    events = book.on_bar(bar("60500", "61200", "60400", "61100"))
    assert [e.fill.price for e in events if e.fill] == [D("60987.8")]  # 61,000 - 0.02 %
    short = PaperBook(balance=D(10000), clock=lambda: T0)
    short.set_leverage(BTC, 5)
    short.submit(order("entry", OrderSide.SELL, OrderType.MARKET, "0.1"), D(60000))  # 59,988.0
    short.submit(order("sl", OrderSide.BUY, OrderType.STOP_MARKET, "0.1", "61000"), D(0))
    short.submit(order("tp", OrderSide.BUY, OrderType.TAKE_PROFIT_MARKET, "0.1", "59000"), D(0))
    events = short.on_bar(bar("60000", "61500", "58500", "60500"))
    assert [(e.kind, e.fill.price if e.fill else None) for e in events] == [("fill", D("61012.2")), ("expired", None)]
    assert events[0].realized_pnl == D("0.1") * (D("59988.0") - D("61012.2")) - D("0.1") * D("61012.2") * D("0.0004")


def test_isolated_liquidation_loses_the_margin_and_comes_after_a_nearer_stop() -> None:
    book = PaperBook(balance=D(10000), clock=lambda: T0)
    book.set_leverage(BTC, 100)
    book.submit(order("entry", OrderSide.BUY, OrderType.MARKET, "0.1"), D(60000))  # 60,012.0, margin 60.012
    position = book.positions[BTC]
    assert position.margin == D("60.012")
    lp = position.liquidation()
    # LP = (WB + cum - amount x EP) / (amount x MMR - amount) = (60.012 - 6001.2) / (0.1 x 0.004 - 0.1)
    assert lp == (D("60.012") - D("6001.2")) / (D("0.0004") - D("0.1"))
    events = book.on_bar(bar("60000", "60050", "59000", "59100"))
    assert [e.kind for e in events] == ["liquidation"]  # no resting order to expire
    assert events[0].realized_pnl == D("-60.012") and BTC not in book.positions
    assert book.balance == D(10000) - D("0.1") * D("60012.0") * D("0.0004") - D("60.012")

    guarded = PaperBook(balance=D(10000), clock=lambda: T0)
    guarded.set_leverage(BTC, 100)
    guarded.submit(order("entry", OrderSide.BUY, OrderType.MARKET, "0.1"), D(60000))
    guarded.submit(order("sl", OrderSide.SELL, OrderType.STOP_MARKET, "0.1", "59700"), D(0))  # above the LP
    events = guarded.on_bar(bar("60000", "60050", "59000", "59100"))
    assert [e.kind for e in events] == ["fill"]  # the stop is nearer the open: it closes first, no liquidation


def test_reduce_only_never_flips_and_orders_are_idempotent() -> None:
    book = long_with_exits()
    again, _ = book.submit(order("entry", OrderSide.BUY, OrderType.MARKET, "0.1"), D(70000))
    assert again.average_price == D("60012.0") and book.positions[BTC].amount == D("0.1")  # replayed, not refilled
    flat = PaperBook(balance=D(10000), clock=lambda: T0)
    state, events = flat.submit(OrderRequest("r", BTC, OrderSide.SELL, OrderType.MARKET, D(1), reduce_only=True), D(1))
    assert state.status is OrderStatus.EXPIRED and events[0].kind == "expired" and not flat.positions
    with pytest.raises(InsufficientMargin):
        flat.submit(order("big", OrderSide.BUY, OrderType.MARKET, "10"), D(60000))  # 600,000 USDT at 1x


def test_a_resting_limit_fills_at_its_price_as_maker() -> None:
    book = PaperBook(balance=D(10000), clock=lambda: T0)
    state, _ = book.submit(OrderRequest("l", BTC, OrderSide.BUY, OrderType.LIMIT, D("0.01"), price=D(59000)), D(60000))
    assert state.status is OrderStatus.NEW
    events = book.on_bar(bar("60000", "60100", "58900", "59500"))
    assert events[0].fill is not None and events[0].fill.price == D(59000) and events[0].fill.maker
    assert events[0].fill.fee == D("0.01") * D(59000) * D("0.0002")
