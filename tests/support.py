"""Helpers shared by the tests (fixtures live in conftest.py)."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from alembic.config import Config

from alembic import command
from app.bootstrap import Container
from app.core.bus import Event, HandlerTable
from app.core.settings import Settings
from app.domains.execution.feed import NoPrice
from app.domains.execution.paper import Bar
from app.domains.exits.plan import ExitConfig
from app.domains.markets.catalog import UnknownSymbol
from app.handlers import default_handlers
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-api-key-0123456789abcdef"


def alembic_upgrade(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


class FakeClock:
    """A settable UTC clock for the governor's day boundaries and price ages."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class EventRecorder:
    events: list[Event] = field(default_factory=list)

    async def record(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def table(self) -> HandlerTable:
        table = default_handlers()
        for kind in list(table):
            table[kind] = [*table[kind], self.record]
        return table


DEFAULT_QUOTES = {
    "BTC/USDT:USDT": Decimal(60000),
    "ETH/USDT:USDT": Decimal(3000),
    "LTC/USDT:USDT": Decimal(80),
    "ADA/USDT:USDT": Decimal("0.5"),
    "XRP/USDT:USDT": Decimal("0.6"),
    "DOGE/USDT:USDT": Decimal("0.1"),
    "TRX/USDT:USDT": Decimal("0.1"),
}
"""The QuoteFeed's market before a test quotes anything (trades at the market fill here)."""


class QuoteFeed:
    """A test double of the price feed for tests that are not about execution: a symbol's price is the
    last quote set for it (`quote`), and bars are whatever a test queues (`push`). `running` quotes the
    price a request to POST /trades or /trades/{id}/close expects, so those tests keep their numbers
    (with PAPER_SLIPPAGE_PCT=0 from `make_settings`). Execution tests use the real replay feed."""

    name = "quotes"

    def __init__(self) -> None:
        self.quotes: dict[str, Decimal] = dict(DEFAULT_QUOTES)
        self.bars: dict[str, list[Bar]] = {}
        self.rates: dict[tuple[str, int], Decimal] = {}

    def now(self) -> datetime:
        return datetime.now(UTC)

    def quote(self, symbol: str, price: Decimal) -> None:
        self.quotes[symbol] = price

    def push(self, bar: Bar, funding_rate: Decimal | None = None) -> None:
        self.bars.setdefault(bar.symbol, []).append(bar)
        if funding_rate is not None:
            self.rates[(bar.symbol, bar.open_ms)] = funding_rate

    async def price(self, symbol: str) -> Decimal:
        if symbol not in self.quotes:
            raise NoPrice(f"no quote for {symbol}")
        return self.quotes[symbol]

    async def closed_bars(self, symbol: str, after_open_ms: int | None) -> list[Bar]:
        return [b for b in self.bars.get(symbol, []) if after_open_ms is None or b.open_ms > after_open_ms]

    async def funding_rate(self, symbol: str, open_ms: int) -> Decimal | None:
        return self.rates.get((symbol, open_ms))


async def _quote_expected_price(container: Container, request: httpx.Request) -> None:
    """Quote, on a QuoteFeed, the price a trade request expects (see QuoteFeed)."""
    feed = container.trading.execution.feed
    if not isinstance(feed, QuoteFeed) or request.method != "POST":
        return
    path = request.url.path
    if path != "/trades" and not (path.startswith("/trades/") and path.endswith("/close")):
        return
    try:
        body = json.loads(request.content or b"{}")  # a streamed body raises RequestNotRead: not quoted
        price = Decimal(str(body["price"]))
        if not price.is_finite() or price <= 0:
            return
        if path == "/trades":
            symbol = container.markets.resolve(str(body["symbol"])).symbol
        else:
            position = container.trading.execution.position_of(uuid.UUID(path.split("/")[2]))
            if position is None:
                return
            symbol = position["symbol"]
    except (ValueError, KeyError, TypeError, ArithmeticError, UnknownSymbol, httpx.RequestNotRead):
        return
    feed.quote(symbol, price)


@asynccontextmanager
async def running(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """The app of `container` with its lifespan, behind an in-memory HTTP client."""
    app = create_app(container.settings, container)

    async def hook(request: httpx.Request) -> None:
        await _quote_expected_price(container, request)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"X-API-Key": API_KEY}, event_hooks={"request": [hook]}
        ) as client:
            yield client


def default_plan_breakeven() -> float:
    """The P(TP1 before the stop) at which the default trade breaks even: TP1 and the stop of the default exit
    plan, the default taker fee on each fill's notional and the default paper slippage against the trader on
    both fills, every miss a full stop (a long; about 0.5317). The minimum confidences must lie above it."""
    exits = ExitConfig()
    fee = float(Settings.model_fields["taker_fee_rate"].default)
    slippage = float(Settings.model_fields["paper_slippage_pct"].default) / 100

    def net(ratio: float) -> float:  # exit fill / entry fill, less the fees of both fills
        return ratio - 1.0 - fee - fee * ratio

    win = net((1.0 + exits.tp_distances[0]) * (1.0 - slippage))
    loss = net((1.0 - exits.sl_distance) * (1.0 - slippage))
    return -loss / (win - loss)


def trade_body(**overrides: Any) -> dict[str, Any]:
    """A trade intent every default profile allows on a 10,000 USDT account."""
    body: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": "LONG",
        "notional": "250",
        "leverage": "2",
        "price": "60000",
        "confidence": "0.8",
        "stop_loss": "59000",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


class TcpProxy:
    """A loopback TCP proxy that can be cut and restored: a Redis outage without touching Redis."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, upstream_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def uvicorn_process(env: dict[str, str], workdir: Path) -> AsyncIterator[str]:
    """`app.main:app` in its own uvicorn process (one worker); yields its base URL."""
    port = free_port()
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(  # noqa: ASYNC220 - our own interpreter; started once per test
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=workdir,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError(f"uvicorn exited: {proc.stderr.read().decode() if proc.stderr else ''}")
                try:
                    if (await client.get(f"{url}/health", timeout=1)).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("uvicorn did not start within 30 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float, step: float = 0.02) -> float:
    """Poll `predicate` until true; returns the seconds it took, fails after `seconds`."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if await predicate():
            return time.perf_counter() - started
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {seconds} s")
