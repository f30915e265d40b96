"""Helpers shared by the tests (fixtures live in conftest.py)."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from alembic.config import Config

from alembic import command
from app.bootstrap import Container
from app.core.bus import Event, HandlerTable
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


@asynccontextmanager
async def running(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """The app of `container` with its lifespan, behind an in-memory HTTP client."""
    app = create_app(container.settings, container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"X-API-Key": API_KEY}
        ) as client:
            yield client


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
