"""Open positions survive `kill -9` of a real uvicorn server on Postgres, and no leg executes twice.

1. PRICE_FEED_SPEED 1 (real time: no candle closes during the test): two positions opened at the market,
   the server killed, started again -> the same positions OPEN with the same exit plans and the same resting
   reduce-only orders (same client ids, NEW), no row duplicated, and a close after the restart works.
2. PRICE_FEED_SPEED 36000 (10 simulated hours a second): the monitor applies candles while the server is
   killed mid-way; started again it carries on, and every order is filled at most once, no position goes
   negative and no position is reduced by more than it held.
"""

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.bootstrap import bootstrap
from app.core.settings import get_settings
from app.domains.execution.feed import ReplayPriceFeed
from app.domains.markets.marketdata import ReplayMarketData
from app.main import create_app
from tests.integration.test_policy_durability import _wait_healthy
from tests.support import API_KEY, ROOT, free_port, trade_body, wait_until

pytestmark = pytest.mark.postgres

D = Decimal
START = "2024-03-01T03:00:00Z"
MAIN_APP = "app.main:app"
FEED_CLOCK_APP = "tests.integration.test_positions_restart:feed_clock_app"


def feed_clock_app() -> FastAPI:
    """The app as `app.main` builds it, except that the trading clock is the replay feed's simulated clock
    (uvicorn --factory). See the wall-clock bug in test_positions_api.py."""
    settings = get_settings()
    data = ReplayMarketData(Path(settings.market_data_dir) if settings.market_data_dir else None, cache_size=64)
    feed = ReplayPriceFeed(data, settings.price_feed_start, settings.price_feed_speed)
    return create_app(settings, bootstrap(settings, price_feed=feed, clock=feed.now))


def _env(pg_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "REDIS_URL": "",
        "API_KEY": API_KEY,
        "GOVERNANCE_LIMITS_ENABLED": "false",
        "MODES_ENABLED": "false",
        "PRICE_FEED_START": START,
        **extra,
    }


def _server(target: str, env: dict[str, str], workdir: Path, port: int) -> subprocess.Popen[bytes]:
    factory = ["--factory"] if target == FEED_CLOCK_APP else []
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", target, *factory, "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@asynccontextmanager
async def served(target: str, env: dict[str, str], workdir: Path, client: httpx.AsyncClient) -> AsyncIterator[Any]:
    """A server process; yields (base url, kill) where kill() is `kill -9` (also done on exit)."""
    port = free_port()
    proc = _server(target, env, workdir, port)

    def kill() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    try:
        await _wait_healthy(client, f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}", kill
    finally:
        kill()


async def _rows(pg_url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def _counts(pg_url: str) -> dict[str, int]:
    counts = {}
    for table in ("positions", "orders", "fills", "exit_plans", "exit_legs", "position_events", "trades"):
        counts[table] = (await _rows(pg_url, f"SELECT count(*) FROM {table}"))[0][0]
    return counts


async def _open(client: httpx.AsyncClient, url: str, **overrides: Any) -> dict[str, Any]:
    body = trade_body(price=None, stop_loss=None, notional="900", leverage="5", **overrides)
    response = await client.post(f"{url}/trades", json=body)
    assert response.status_code == 201, response.text
    trade: dict[str, Any] = response.json()["trade"]
    return trade


async def _state(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """What a restart must keep: every position, its exit plan and its orders, as the API shows them."""
    positions = (await client.get(f"{url}/positions", params={"limit": 200})).json()["items"]
    state: dict[str, Any] = {}
    for p in positions:
        p = {k: v for k, v in p.items() if k not in ("mark_price", "unrealized_pnl")}  # the feed moves
        plan = (await client.get(f"{url}/positions/{p['id']}/exit-plan")).json()
        orders = (await client.get(f"{url}/orders", params={"position_id": p["id"], "limit": 200})).json()["items"]
        state[p["id"]] = {"position": p, "plan": plan, "orders": sorted(orders, key=lambda o: o["client_order_id"])}
    return state


async def _assert_nothing_executed_twice(pg_url: str) -> None:
    twice = await _rows(pg_url, "SELECT order_id, count(*) FROM fills GROUP BY order_id HAVING count(*) > 1")
    assert twice == [], f"orders filled more than once: {twice}"
    ids = await _rows(pg_url, "SELECT client_order_id FROM orders GROUP BY client_order_id HAVING count(*) > 1")
    assert ids == []
    legs = await _rows(
        pg_url,
        "SELECT l.id, count(f.id) FROM exit_legs l JOIN orders o ON o.client_order_id = l.order_client_id "
        "LEFT JOIN fills f ON f.order_id = o.id GROUP BY l.id HAVING count(f.id) > 1",
    )
    assert legs == [], f"legs executed twice: {legs}"
    positions = await _rows(
        pg_url, "SELECT id, status, initial_amount, amount, realized_pnl, funding, fees FROM positions"
    )
    assert positions
    for pid, status, initial, amount, realized, funding, fees in positions:
        assert amount >= 0, (pid, amount)
        closing = await _rows(
            pg_url,
            "SELECT f.amount, f.realized_pnl, f.fee, o.purpose FROM fills f JOIN orders o ON o.id = f.order_id "
            "WHERE f.position_id = :pid",
            pid=pid,
        )
        entries = [c for c in closing if c[3] == "ENTRY"]
        assert len(entries) == 1 and entries[0][0] == initial, (pid, entries)
        reduced = sum((c[0] for c in closing if c[3] != "ENTRY"), D(0))
        assert reduced <= initial, (pid, reduced, initial)
        if status == "CLOSED":
            assert reduced == initial and amount == 0, (pid, reduced, initial, amount)
        elif status == "OPEN":
            assert reduced + amount == initial, (pid, reduced, amount, initial)
        # The position's realized PnL is exactly its fills (each net of its fee) plus its funding.
        assert realized == sum((c[1] for c in closing), D(0)) + funding, pid
        assert fees == sum((c[2] for c in closing), D(0)), pid
        paid = await _rows(
            pg_url,
            "SELECT coalesce(sum(realized_pnl), 0) FROM position_events WHERE position_id = :pid AND kind = 'funding'",
            pid=pid,
        )
        assert paid[0][0] == funding, pid


async def test_kill_9_keeps_the_open_positions_their_plans_and_protective_orders(tmp_path: Path, pg_url: str) -> None:
    env = _env(pg_url)  # PRICE_FEED_SPEED 1: real time, no candle closes during the test
    async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10) as client:
        async with served(MAIN_APP, env, tmp_path, client) as (url, kill):
            btc = await _open(client, url)  # BTCUSDT LONG
            eth = await _open(client, url, symbol="ETHUSDT", side="SHORT")
            # The 02:00 closes 61,063.9 and 3,370.1, 0.02 % slippage against the taker, to the tick.
            assert (D(btc["entry_price"]), D(btc["quantity"])) == (D("61076.1"), D("0.014"))  # 900 / 61,063.9
            assert (D(eth["entry_price"]), D(eth["quantity"])) == (D("3369.43"), D("0.267"))  # 900 / 3,370.1
            before = await _state(client, url)
            assert len(before) == 2
            for s in before.values():
                assert s["position"]["status"] == "OPEN"
                assert [leg["kind"] for leg in s["plan"]["legs"]] == ["TP", "TP", "TP", "SL"]
                resting = [o for o in s["orders"] if o["purpose"] != "ENTRY"]
                assert len(resting) == 4 and {o["status"] for o in resting} == {"NEW"}
            kill()
        counts = await _counts(pg_url)
        assert counts == {
            "positions": 2,
            "orders": 10,  # per position: the entry + 3 take-profits + the stop
            "fills": 2,
            "exit_plans": 2,
            "exit_legs": 8,
            "position_events": 0,
            "trades": 2,
        }

        async with served(MAIN_APP, env, tmp_path, client) as (url, kill):
            after = await _state(client, url)
            assert after == before  # same positions, stops, targets, client ids, statuses, amounts
            assert await _counts(pg_url) == counts  # nothing duplicated by the restart
            listed = (await client.get(f"{url}/positions", params={"status": "OPEN"})).json()
            assert listed["total"] == 2

            # A close after the restart: the rebuilt book still holds the position and its orders.
            (btc_position,) = [s["position"] for s in after.values() if s["position"]["trade_id"] == btc["id"]]
            closed = await client.post(f"{url}/positions/{btc_position['id']}/close", json={})
            assert closed.status_code == 200, closed.text
            # The feed restarted at 03:00: a market sell of 0.014 at 61,063.9 x 0.9998 = 61,051.68722 -> 61,051.7.
            # Entry fee 0.014 x 61,076.1 x 0.0004 = 0.34202616; the close 0.014 x (61,051.7 - 61,076.1) = -0.3416
            # less its fee 0.014 x 61,051.7 x 0.0004 = 0.34188952.
            body = closed.json()
            assert (body["status"], D(body["amount"])) == ("CLOSED", D(0))
            assert D(body["realized_pnl"]) == D("-0.34202616") - D("0.3416") - D("0.34188952")
            orders = (await client.get(f"{url}/orders", params={"position_id": btc_position["id"]})).json()["items"]
            assert sorted((o["purpose"], o["status"]) for o in orders) == [
                ("CLOSE", "FILLED"),
                ("ENTRY", "FILLED"),
                ("SL", "EXPIRED"),  # reduce-only: nothing left to reduce
                ("TP", "EXPIRED"),
                ("TP", "EXPIRED"),
                ("TP", "EXPIRED"),
            ]
            still = await _state(client, url)
            (eth_id,) = [pid for pid, s in still.items() if s["position"]["trade_id"] == eth["id"]]
            assert still[eth_id] == before[eth_id]  # the other position is untouched
            trade = (await client.get(f"{url}/trades/{btc['id']}")).json()
            assert (trade["status"], D(trade["realized_pnl"])) == ("CLOSED", D(body["realized_pnl"]))
            kill()
        await _assert_nothing_executed_twice(pg_url)
        assert (await _counts(pg_url))["fills"] == 3


@pytest.mark.parametrize(
    "target",
    [
        MAIN_APP,
        FEED_CLOCK_APP,
    ],
)
async def test_kill_9_while_the_monitor_applies_candles_executes_no_leg_twice(
    target: str, tmp_path: Path, pg_url: str
) -> None:
    # ~1 candle every 3 ticks: slow enough that the kill, sent as soon as a first exit fills, finds positions
    # still open on a busy machine (at 1 candle per tick all four had often closed by then)
    env = _env(pg_url, PRICE_FEED_SPEED="12000", MONITOR_INTERVAL_SECONDS="0.1")
    async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10) as client:
        async with served(target, env, tmp_path, client) as (url, kill):
            for symbol in ("BTCUSDT", "ETHUSDT"):
                for side in ("LONG", "SHORT"):
                    await _open(client, url, symbol=symbol, side=side)

            async def an_exit_filled() -> bool:
                page = (await client.get(f"{url}/orders", params={"status": "FILLED", "limit": 200})).json()
                return any(o["purpose"] != "ENTRY" for o in page["items"])

            await wait_until(an_exit_filled, 30, step=0.05)
            now = (await client.get(f"{url}/api/v2/market/prices")).json()["now"]
            kill()  # mid-way: the monitor ticks every 0.1 s
        open_at_kill = await _rows(pg_url, "SELECT count(*) FROM positions WHERE status = 'OPEN'")
        await _assert_nothing_executed_twice(pg_url)

        # Started again, the replay continues from where it was seen last.
        async with served(target, {**env, "PRICE_FEED_START": now}, tmp_path, client) as (url, kill):

            async def all_closed() -> bool:
                page = (await client.get(f"{url}/positions", params={"status": "OPEN"})).json()
                return bool(page["total"] == 0)

            await wait_until(all_closed, 30, step=0.1)
            kill()
        await _assert_nothing_executed_twice(pg_url)
        assert open_at_kill[0][0] > 0, "every position had closed before the kill: not mid-way"
        closed = await _rows(pg_url, "SELECT count(*) FROM positions WHERE status IN ('CLOSED', 'LIQUIDATED')")
        assert closed[0][0] == 4
        account = await _rows(pg_url, "SELECT equity, open_positions, open_notional FROM accounts")
        total = await _rows(pg_url, "SELECT sum(realized_pnl) FROM positions")
        assert account == [(D(10000) + total[0][0], 0, D(0))]  # equity moved by exactly the realized PnL
        trades = await _rows(
            pg_url,
            "SELECT count(*) FROM trades t JOIN positions p ON p.trade_id = t.id WHERE t.realized_pnl = p.realized_pnl",
        )
        assert trades[0][0] == 4
