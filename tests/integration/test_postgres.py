"""Against the real PostgreSQL: migrations, exact money, and concurrency across instances."""

import asyncio
import itertools
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app.bootstrap import bootstrap
from app.core.db import Base, create_engine
from app.core.settings import Settings
from app.domains.policy.backends import InProcessPolicyBackend
from tests.conftest import TEST_REDIS_URL
from tests.support import API_KEY, ROOT, running, trade_body, uvicorn_process
from tests.tcp_proxy import FaultProxy

pytestmark = pytest.mark.postgres

PRICES = {
    "BTCUSDT": "60000",
    "ETHUSDT": "3000",
    "LTCUSDT": "80",
    "ADAUSDT": "0.5",
    "XRPUSDT": "0.6",
    "DOGEUSDT": "0.1",
    "TRXUSDT": "0.1",
}


async def test_migrations_build_the_models_schema_on_postgres(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
            assert diff == []
            types = dict(
                (
                    await conn.execute(
                        text("SELECT column_name, data_type FROM information_schema.columns WHERE table_name='trades'")
                    )
                ).all()
            )
        assert types["entry_price"] == types["notional"] == types["realized_pnl"] == "numeric"
        assert types["opened_at"] == "timestamp with time zone"
    finally:
        await engine.dispose()


async def test_downgrade_and_upgrade_again(pg_url: str) -> None:
    from alembic.config import Config

    from alembic import command

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes.update(url=pg_url, configure_logger=False)
    await asyncio.to_thread(command.downgrade, cfg, "base")
    await asyncio.to_thread(command.upgrade, cfg, "head")


async def test_money_round_trips_exactly(pg_url: str, make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings(database_url=pg_url))
    async with running(container) as client:
        body = trade_body(symbol="DOGEUSDT", price="0.08123", stop_loss="0.08", notional="250")
        opened = (await client.post("/trades", json=body)).json()["trade"]
        closed = (await client.post(f"/trades/{opened['id']}/close", json={"price": "0.08257"})).json()
        assert opened["quantity"] == "3077" and opened["notional"] == "249.94471"
        assert closed["realized_pnl"] == str(
            (Decimal("0.08257") - Decimal("0.08123")) * 3077
            - Decimal(opened["entry_fee"])
            - Decimal(closed["exit_fee"])
        )
        async with container.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT entry_price::text, realized_pnl = :pnl FROM trades"),
                    {"pnl": Decimal(closed["realized_pnl"])},
                )
            ).one()
        assert row == ("0.081230000000000000", True)


async def test_two_containers_on_one_database_never_exceed_exposure(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    """Two app instances, one Postgres: the row lock serializes their checks."""
    backend = InProcessPolicyBackend()
    settings = make_settings(database_url=pg_url, paper_starting_balance=1000)
    a, b = bootstrap(settings, policy_backend=backend), bootstrap(settings, policy_backend=backend)
    async with running(a) as client_a, running(b) as client_b:
        body = trade_body(symbol="ETHUSDT", price="3000", stop_loss="2950", notional="400", leverage="5")
        clients = itertools.cycle([client_a, client_b])
        responses = await asyncio.gather(*(next(clients).post("/trades", json=body) for _ in range(40)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 5 and statuses.count(403) == 35
        reasons = {r.json()["reasons"][0]["code"] for r in responses if r.status_code == 403}
        assert reasons == {"HARD_TOTAL_EXPOSURE"}
        account = (await client_a.get("/api/v2/account")).json()
        assert Decimal(account["open_notional"]) * 100 / Decimal(account["equity"]) <= 200
        async with a.sessions() as session:
            from app.domains.trading.repository import TradingRepository

            count, notional, margin = await TradingRepository(session).open_totals(a.settings.account_id)
        assert (count, notional, margin) == (5, Decimal(account["open_notional"]), Decimal(account["used_margin"]))


@pytest.mark.redis
async def test_hundred_concurrent_trades_on_two_uvicorn_instances(
    pg_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The issue's example: max_open_positions 3, 100 trades over 7 symbols, 2 instances -> exactly 3 open."""
    env = {"DATABASE_URL": pg_url, "REDIS_URL": TEST_REDIS_URL, "REDIS_PREFIX": redis_prefix, "API_KEY": API_KEY}
    headers = {"X-API-Key": API_KEY}
    async with uvicorn_process(env, tmp_path) as url_a, uvicorn_process(env, tmp_path) as url_b:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
            patch = await client.patch(
                f"{url_a}/api/v2/policy/risk-profile", json={"max_open_positions": 3, "reason": "concurrency test"}
            )
            assert patch.status_code == 200
            assert (await client.get(f"{url_b}/api/v2/policy/risk-profile")).json()["max_open_positions"] == 3
            # At the market of the bundled candles (the servers' replay feed): the symbols it has prices for.
            market = (await client.get(f"{url_a}/api/v2/market/prices")).json()
            symbols = itertools.cycle(sorted(p["symbol"] for p in market["prices"]))
            bodies = [
                trade_body(symbol=next(symbols), price=None, stop_loss=None, client_order_id=f"race-{i}")
                for i in range(100)
            ]
            responses = await asyncio.gather(
                *(client.post(f"{(url_a, url_b)[i % 2]}/trades", json=body) for i, body in enumerate(bodies))
            )
            statuses = [r.status_code for r in responses]
            assert statuses.count(201) == 3, statuses
            assert statuses.count(403) == 97
            for r in responses:
                if r.status_code == 403:
                    assert [x["code"] for x in r.json()["reasons"]] == ["MAX_OPEN_POSITIONS"]
            listed = (await client.get(f"{url_b}/trades", params={"status": "OPEN"})).json()
            assert listed["total"] == 3
            decisions = (await client.get(f"{url_a}/api/v2/risk/decisions", params={"limit": 1})).json()
            assert decisions["total"] == 100
            assert (await client.get(f"{url_a}/api/v2/account")).json()["open_positions"] == 3


async def test_database_outage_is_503_and_a_retry_opens_one_trade(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    """Postgres refuses connections (and resets the open ones): a quick JSON 503 for every request
    (reads, writes, /ready), then recovery without a restart. tests/integration/test_db_outage.py
    covers reset connections and a black hole."""
    parts = urlsplit(pg_url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    through_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    container = bootstrap(make_settings(database_url=through_proxy))
    try:
        async with running(container) as client:
            assert (await client.post("/trades", json=trade_body(client_order_id="before"))).status_code == 201
            await proxy.refuse()
            body = trade_body(client_order_id="during-outage")
            for request in (
                client.post("/trades", json=body),
                client.post("/trades", json=body),  # the pool's connection was reset, now connects are refused
                client.get("/trades"),
                client.get("/api/v2/account"),
                client.get("/ready"),
            ):
                started = time.perf_counter()
                response = await request
                assert time.perf_counter() - started < 1.0
                assert response.status_code == 503, response.text
                assert response.json().get("trace_id", "/ready") in (response.headers["x-trace-id"], "/ready")
                assert "127.0.0.1" not in response.text and str(proxy.port) not in response.text
            assert response.json()["components"]["database"]["error"] == "connection_refused"
            response = await client.post("/trades", json=body)
            assert response.json() == {
                "error": "database_unavailable",
                "detail": "the database is unavailable (connection_refused); retry shortly. A trade retried "
                "with the same client_order_id is opened at most once",
                "trace_id": response.headers["x-trace-id"],
            }
            await proxy.pass_through()
            responses = [await client.post("/trades", json=body) for _ in range(3)]
            assert [r.status_code for r in responses] == [201, 201, 201]
            assert len({r.json()["trade"]["id"] for r in responses}) == 1
            assert (await client.get("/trades")).json()["total"] == 2
    finally:
        await proxy.stop()
