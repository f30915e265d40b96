"""Several processes, one decider: the Redis lease picks the process that decides the portfolio
policy and the operating mode; the others apply its stored decisions within about a second. Two
containers on one Postgres database and one Redis stand in for two workers."""

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from decimal import Decimal

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.lease import Leadership
from app.core.settings import Settings
from app.domains.governance.memory import MemoryEvent
from app.domains.governance.policy import LIMITS, PortfolioPolicy
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from tests.conftest import TEST_REDIS_URL
from tests.support import running, trade_body, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


Worker = tuple[httpx.AsyncClient, Container]


@pytest.fixture
async def workers(
    make_settings: Callable[..., Settings], pg_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Worker, Worker]]:
    settings = make_settings(
        database_url=pg_url,
        redis_url=TEST_REDIS_URL,
        redis_prefix=redis_prefix,
        governance_limits_enabled=True,
        governance_streams_enabled=False,
        modes_enabled=True,
        min_samples=5,
    )
    first, second = bootstrap(settings), bootstrap(settings)
    # Two containers of one test process: give each its own identity, as two workers have.
    first.leadership.identity, second.leadership.identity = "worker-1", "worker-2"
    async with AsyncExitStack() as stack:
        client_1 = await stack.enter_async_context(running(first))
        client_2 = await stack.enter_async_context(running(second))
        yield (client_1, first), (client_2, second)


async def test_one_process_decides_and_the_other_applies_its_decisions(workers: tuple[Worker, Worker]) -> None:
    (client_1, first), (client_2, second) = workers
    assert first.leadership.is_leader and not second.leadership.is_leader
    assert (await client_1.get("/api/governance/status")).json()["role"] == "leader"
    assert (await client_2.get("/api/ceo/status")).json()["role"] == "follower"

    # The leader decides CONSERVATIVE; the follower adopts it without deciding anything itself.
    for i in range(5):
        first.governance.memory.record(
            f"x:{i}", MemoryEvent(first.trading.clock(), "BTCUSDT", "LONG", 10.0, -1.0, 0.8, 0.5, 1e3, "sl")
        )
    assert (await client_1.post("/api/governance/evaluate")).json()["policy"] == "CONSERVATIVE"

    async def adopted() -> bool:
        # the policy can come back first from the restored rows (no reason yet); the follow loop (every second)
        # then adopts the decision with the leader's reason
        decision = second.governance.decision
        return second.governance.policy.value == "CONSERVATIVE" and decision is not None

    await wait_until(adopted, seconds=5)
    body = (await client_2.get("/api/governance/status")).json()
    assert body["role"] == "follower" and body["reason"].startswith("adopted from the leader")
    # A confidence the NORMAL profile allows and CONSERVATIVE refuses.
    conservative = Decimal(str(LIMITS[PortfolioPolicy.CONSERVATIVE].min_confidence))
    between = (DEFAULT_PROFILES[RiskMode.NORMAL].global_min_confidence + conservative) / 2
    denied = await client_2.post("/trades", json=trade_body(confidence=str(between)))
    assert denied.status_code == 403
    assert "governance=CONSERVATIVE" in denied.json()["reasons"][0]["detail"]

    # A pin made through the follower applies in the leader within a second, and back.
    pinned = await client_2.post("/api/ceo/pin", json={"mode": "EMERGENCY", "reason": "exchange incident"})
    assert pinned.status_code == 200, pinned.text

    async def leader_pinned() -> bool:
        return first.modes.mode is not None and first.modes.mode.value == "EMERGENCY"

    await wait_until(leader_pinned, seconds=3)
    denied = await client_1.post("/trades", json=trade_body(confidence="0.9"))
    assert denied.status_code == 403
    assert any("mode=EMERGENCY" in r["detail"] for r in denied.json()["reasons"])
    # A decision of the leader does not drop the follower's pin.
    await client_1.post("/api/ceo/evaluate")
    assert first.modes.pin is not None and first.modes.pin.mode.value == "EMERGENCY"
    assert (await client_1.post("/api/ceo/unpin", json={"reason": "incident over"})).status_code == 200

    async def follower_unpinned() -> bool:
        return second.modes.pin is None

    await wait_until(follower_unpinned, seconds=3)

    # The leader steps down: the other process takes the lease and decides.
    await first.leadership.stop()

    async def took_over() -> bool:
        return await second.leadership.refresh()

    await wait_until(took_over, seconds=3)
    assert (await client_2.get("/api/governance/status")).json()["role"] == "leader"


async def test_the_lease_is_held_by_one_process_and_released_on_stop(redis_prefix: str) -> None:
    key = f"{redis_prefix}:leader:test"
    a, b = Leadership(TEST_REDIS_URL, key, "a", ttl_seconds=5), Leadership(TEST_REDIS_URL, key, "b", ttl_seconds=5)
    await a.start()
    await b.start()
    try:
        assert a.is_leader and not b.is_leader and await b.holder() == "a"
        assert await a.refresh() and not await b.refresh()
        await a.stop()
        assert not a.is_leader
        assert await b.refresh() and await b.holder() == "b"
    finally:
        await a.stop()
        await b.stop()
    assert Leadership(None, key).is_leader  # without Redis the one process decides
