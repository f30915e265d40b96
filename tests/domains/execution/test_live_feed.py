"""The live price feed (EXCHANGE=binance) against the fake Binance transport: marks from the exchange's
premium index, closed candles only, and an exchange that does not answer is NoPrice (a 503), never a guess."""

import socket
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
import pytest

from app.domains.execution.binance import BinanceUsdmExchange, RetryPolicy
from app.domains.execution.feed import LivePriceFeed, NoPrice
from app.domains.markets.marketdata import CcxtMarketData
from tests.fake_binance import API_KEY, SECRET, FakeBinance, binance_error

BTC = "BTC/USDT:USDT"
HOUR = 3_600_000
NOW = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)  # half-way through the 12:00 candle
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(aiohttp.ClientSession, "__init__", refuse)


async def make() -> tuple[LivePriceFeed, FakeBinance, BinanceUsdmExchange]:
    fake = FakeBinance()

    async def no_sleep(seconds: float) -> None:
        return None

    exchange = BinanceUsdmExchange(
        api_key=API_KEY, secret=SECRET, session=fake, sleep=no_sleep, retry=RetryPolicy(max_attempts=2)
    )

    async def no_throttle(cost: float | None = None) -> None:
        return None

    exchange.client.throttle = no_throttle
    data = CcxtMarketData(exchange.client, max_attempts=1, sleep=no_sleep, now_ms=lambda: NOW_MS)
    return LivePriceFeed(exchange, data, lambda: NOW), fake, exchange


def kline(open_ms: int, close: str) -> list[object]:
    return [open_ms, "100.0", "110.0", "90.0", close, "12.5", open_ms + HOUR - 1, "1250.0", 10, "6.0", "600.0", "0"]


async def test_the_mark_is_the_exchanges_mark_price_now() -> None:
    feed, fake, exchange = await make()
    fake.on("GET", "/fapi/v1/premiumIndex", {"symbol": "BTCUSDT", "markPrice": "42123.40000000", "time": NOW_MS})
    try:
        assert await feed.price(BTC) == Decimal("42123.40000000")
        assert feed.now() == NOW and feed.name == "live:binance-usdm"
        assert fake.requests[0].params == {"symbol": "BTCUSDT"}
    finally:
        await exchange.close()


async def test_an_exchange_that_does_not_answer_gives_no_price() -> None:
    feed, fake, exchange = await make()
    down = binance_error(503, -1001, "Internal error; unable to process your request.")
    fake.on("GET", "/fapi/v1/premiumIndex", down, down)
    try:
        with pytest.raises(NoPrice, match="no mark price of BTC/USDT:USDT"):
            await feed.price(BTC)
        assert fake.requests and all(r.path == "/fapi/v1/premiumIndex" for r in fake.requests)
    finally:
        await exchange.close()


async def test_only_candles_closed_by_now_reach_the_monitor() -> None:
    feed, fake, exchange = await make()
    eleven, ten = NOW_MS // HOUR * HOUR - HOUR, NOW_MS // HOUR * HOUR - 2 * HOUR
    fake.on("GET", "/fapi/v1/klines", [kline(ten, "101.0"), kline(eleven, "102.0"), kline(eleven + HOUR, "103.0")])
    fake.on("GET", "/fapi/v1/klines", [])
    try:
        bars = await feed.closed_bars(BTC, ten - 1)
        assert [(b.open_ms, b.close) for b in bars] == [(ten, Decimal("101.0")), (eleven, Decimal("102.0"))]
    finally:
        await exchange.close()
