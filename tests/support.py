"""Helpers shared by the tests (fixtures live in conftest.py)."""

from collections.abc import AsyncIterator
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
