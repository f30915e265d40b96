"""Postgres fails behind a fault proxy (reset, black hole): every request gets a JSON 503 within a
bound, /ready answers within its own, and the service recovers without a restart.

Refused connections are covered by test_postgres.py (an outage, then an idempotent retry).
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from tests.support import running, trade_body, wait_until
from tests.tcp_proxy import FaultProxy

pytestmark = pytest.mark.postgres

CONNECT, STATEMENT, POOL, IDLE_IN_TX = 2.0, 3.0, 2.0, 4.0
# The worst case for one request during a black hole: the batch it queued behind waits out a
# statement (STATEMENT + 0.5 s grace), then its own batch waits out a connect (CONNECT).
REQUEST_BOUND = STATEMENT + 0.5 + CONNECT + 1.0
READY_BOUND = CONNECT + 0.5 + 0.5


@dataclass
class Outage:
    proxy: FaultProxy
    container: Container
    client: httpx.AsyncClient


@pytest.fixture
async def outage(pg_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Outage]:
    parts = urlsplit(pg_url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    through_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    settings = make_settings(
        database_url=through_proxy,
        db_connect_timeout_seconds=CONNECT,
        db_statement_timeout_seconds=STATEMENT,
        db_pool_timeout_seconds=POOL,
        db_idle_in_transaction_timeout_seconds=IDLE_IN_TX,
    )
    container = bootstrap(settings)
    try:
        async with running(container) as client:
            yield Outage(proxy, container, client)
    finally:
        await proxy.stop()


async def timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, time.perf_counter() - started


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "trace_id"}
    assert body["error"] == "database_unavailable"
    assert response.headers["x-trace-id"] == body["trace_id"]
    assert "127.0.0.1" not in response.text and "SELECT" not in response.text


async def ready_within(client: httpx.AsyncClient, seconds: float) -> float:
    """Seconds until /ready is 200 again (polled, bounded)."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if (await client.get("/ready")).status_code == 200:
            return time.perf_counter() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"/ready not 200 within {seconds} s")


async def trades_with(container: Container, client_order_id: str) -> tuple[int, int]:
    """(decisions, trades) stored for one client_order_id, read directly from Postgres."""
    async with container.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*), count(trade_id) FROM risk_decisions WHERE client_order_id = :id",
                ),
                {"id": client_order_id},
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_reset_connections_are_503_and_the_service_recovers(outage: Outage) -> None:
    client, proxy = outage.client, outage.proxy
    assert (await client.post("/trades", json=trade_body(client_order_id="before"))).status_code == 201
    await proxy.reset()  # the pooled connection is reset, and so is every new one
    body = trade_body(client_order_id="during-reset")
    response, elapsed = await timed(client.post("/trades", json=body))
    assert_unavailable(response)
    assert elapsed < 1.0, elapsed
    ready, ready_elapsed = await timed(client.get("/ready"))
    assert ready.status_code == 503 and ready_elapsed < 1.0
    assert ready.json()["components"]["database"]["error"] in ("connection_reset", "connection_lost")
    assert (await client.get("/trades")).status_code == 503
    await proxy.pass_through()
    await ready_within(client, 5)
    responses = [await client.post("/trades", json=body) for _ in range(3)]
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert len({r.json()["trade"]["id"] for r in responses}) == 1
    assert await trades_with(outage.container, "during-reset") == (1, 1)


async def test_black_hole_is_503_within_the_bound_and_recovers_without_restart(outage: Outage) -> None:
    """Postgres stops answering while trades are in flight: every request ends within the bound."""
    client, proxy = outage.client, outage.proxy
    results: list[tuple[str, int, float]] = []
    stop = asyncio.Event()

    async def trader(worker: int) -> None:
        for i in range(200):  # bounded; ends when `stop` is set
            if stop.is_set():
                return
            order_id = f"w{worker}-{i}"
            response, elapsed = await timed(client.post("/trades", json=trade_body(client_order_id=order_id)))
            assert response.status_code in (201, 503), response.text
            if response.status_code == 503:
                assert_unavailable(response)
            results.append((order_id, response.status_code, elapsed))
            await asyncio.sleep(0.1)  # a steady flow, well under the 30 open positions NORMAL allows

    traders = [asyncio.create_task(trader(w)) for w in range(4)]
    await asyncio.sleep(0.3)  # trades flowing through the proxy
    assert {status for _, status, _ in results} == {201}
    before_hole = len(results)
    await proxy.black_hole()
    hole_started = time.perf_counter()
    ready, ready_elapsed = await timed(client.get("/ready"))
    await asyncio.sleep(6)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*traders), timeout=REQUEST_BOUND + 2)
    during = results[before_hole:]

    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert ready.json()["components"]["database"]["error"] == "timeout"
    assert ready_elapsed < READY_BOUND, ready_elapsed
    failed = [r for r in during if r[1] == 503]
    assert failed, "no request met the black hole"
    worst = max(elapsed for _, _, elapsed in during)
    assert worst < REQUEST_BOUND, worst

    hole_lasted = time.perf_counter() - hole_started
    await proxy.pass_through()  # new connections flow; the black-holed ones stay dead
    recovered_after = await ready_within(client, IDLE_IN_TX + STATEMENT + 5)
    started = time.perf_counter()
    retried = failed[:3]
    for _ in range(60):  # a lock left by a black-holed transaction lasts until the server ends it
        response = await client.post("/trades", json=trade_body(client_order_id=retried[0][0]))
        if response.status_code == 201:
            break
        assert_unavailable(response)
    first_trade_after = time.perf_counter() - started
    assert response.status_code == 201
    for order_id, _, _ in retried:
        again = [await client.post("/trades", json=trade_body(client_order_id=order_id)) for _ in range(2)]
        assert [r.status_code for r in again] == [201, 201]
        assert again[0].json()["trade"]["id"] == again[1].json()["trade"]["id"]
        assert await trades_with(outage.container, order_id) == (1, 1)
    print(  # the figures the README quotes (pytest -s)
        f"\nblack hole: {len(during)} requests, {len(failed)} x 503, worst {worst:.2f} s, "
        f"median {sorted(e for _, _, e in during)[len(during) // 2]:.2f} s; /ready {ready_elapsed:.2f} s; "
        f"/ready 200 again {recovered_after:.2f} s after the proxy passed traffic; first trade "
        f"{first_trade_after:.2f} s later; hole lasted {hole_lasted:.1f} s"
    )


async def test_an_exhausted_pool_is_503_after_the_pool_timeout(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    """Every connection is busy (here: held by the test) -> a request waits `pool_timeout`, then 503."""
    container = bootstrap(make_settings(database_url=pg_url, db_pool_size=1, db_pool_timeout_seconds=0.5))
    async with running(container) as client:
        held = [await container.engine.connect() for _ in range(2)]  # pool_size 1 + overflow 1
        try:
            response, elapsed = await timed(client.get("/trades"))
        finally:
            for conn in held:
                await conn.close()
        assert_unavailable(response)
        assert "(pool_timeout)" in response.json()["detail"]
        assert 0.4 < elapsed < 1.5, elapsed
        assert (await client.get("/trades")).status_code == 200


async def test_a_lock_left_by_a_cut_transaction_is_released_by_the_server(outage: Outage) -> None:
    """The black hole cuts a transaction that holds the account lock: Postgres still thinks its
    client is alive. After the network returns, trades get 503 (statement_timeout) until the
    server ends that idle transaction (`DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS`), then succeed."""
    client, proxy = outage.client, outage.proxy
    assert (await client.post("/trades", json=trade_body(client_order_id="first"))).status_code == 201
    holder = await outage.container.engine.connect()
    await holder.begin()
    await holder.execute(text("SELECT id FROM accounts FOR UPDATE"))
    await proxy.black_hole()
    cut = time.perf_counter()
    await proxy.pass_through()
    body = trade_body(client_order_id="after-the-cut")
    statuses = []
    for _ in range(10):  # bounded: each attempt ends within STATEMENT + 0.5 s
        response, elapsed = await timed(client.post("/trades", json=body))
        statuses.append(response.status_code)
        if response.status_code == 201:
            break
        assert_unavailable(response)
        # The server cancels the statement at STATEMENT s; on a loaded machine the client's own limit
        # (0.5 s later) can fire first. Either way: a 503 within the bound.
        detail = response.json()["detail"]
        assert "(statement_timeout)" in detail or "(timeout)" in detail, detail
        assert elapsed < STATEMENT + 1.0
    released_after = time.perf_counter() - cut
    assert statuses[-1] == 201, statuses
    assert released_after < IDLE_IN_TX + STATEMENT + 1.0
    assert await trades_with(outage.container, "after-the-cut") == (1, 1)
    with contextlib.suppress(Exception):
        await holder.close()  # its socket is still black-holed: the rollback times out
    print(f"\nlock of a cut transaction released after {released_after:.2f} s (statuses {statuses})")


async def test_starting_while_postgres_refuses_serves_503_then_recovers_by_itself(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The process starts without its database: nothing served from defaults, 503 until it returns."""
    parts = urlsplit(pg_url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    await proxy.refuse()
    through_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    container = bootstrap(make_settings(database_url=through_proxy, policy_poll_interval_seconds=0.2))
    try:
        async with running(container) as client:
            ready = await client.get("/ready")
            assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
            assert ready.json()["components"]["policy_store"]["status"] == "not_restored"
            profile = (await client.get("/api/v2/policy/risk-profile")).json()
            assert profile["allow_new_positions"] is False and profile["restore_error"]
            trade = await client.post("/trades", json=trade_body(client_order_id="boot-1"))
            assert trade.status_code == 503 and trade.json()["trace_id"]

            await proxy.pass_through()

            async def ready_again() -> bool:
                return (await client.get("/ready")).json()["status"] == "ready"

            await wait_until(ready_again, seconds=10)
            assert (await client.post("/trades", json=trade_body(client_order_id="boot-1"))).status_code == 201
    finally:
        await proxy.stop()
