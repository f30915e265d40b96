"""Governance on the real Redis: the stream feeds the memory, the policy is published under the exact
names, a restart neither double counts nor skips, a malformed entry is counted and acknowledged.

The names are not prefixed, so these tests use Redis database 15 of the test server (away from db 0,
where other test runs publish the same names), hold a Redis lock so that concurrent runs take turns,
and delete the names before and after each test.
"""

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.governance.policy import LIMITS, PolicyConfig, PortfolioPolicy
from app.domains.governance.service import (
    EVENTS_STREAM,
    KEY_PARAM,
    KEY_PARAMS,
    KEY_POLICY,
    KEY_SCORE,
    STREAM,
    GovernanceConfig,
)
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from tests.conftest import TEST_REDIS_URL, _reachable, service_unavailable
from tests.support import running, trade_body, wait_until

pytestmark = pytest.mark.redis

GOVERNANCE_REDIS_URL = urlsplit(TEST_REDIS_URL)._replace(path="/15").geturl()
T0 = datetime(2025, 12, 21, 12, tzinfo=UTC)


async def clean(client: Redis) -> None:
    keys = [k async for k in client.scan_iter(match="quantum:governance:*")]
    await client.delete(STREAM, EVENTS_STREAM, *keys)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    reason = _reachable(TEST_REDIS_URL, 6379)
    if reason:
        service_unavailable("Redis", TEST_REDIS_URL, reason)
    client = Redis.from_url(GOVERNANCE_REDIS_URL)
    lock = client.lock("qt-test:governance-serial", timeout=120, blocking_timeout=120)
    assert await lock.acquire()
    try:
        await clean(client)
        yield client
        await clean(client)
    finally:
        await lock.release()
        await client.aclose()


@pytest.fixture
def make_container(make_settings: Callable[..., Settings], redis_prefix: str) -> Callable[..., Container]:
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = f"c-{uuid.uuid4().hex[:8]}"

    def make(**policy: float) -> Container:
        settings = make_settings(redis_url=TEST_REDIS_URL, redis_prefix=redis_prefix, governance_limits_enabled=True)
        config = GovernanceConfig(
            window=500,
            policy=PolicyConfig(**policy),  # type: ignore[arg-type]
            update_interval=3600,
            redis_url=GOVERNANCE_REDIS_URL,
            group=group,
            consumer=consumer,
            block_ms=50,
        )
        return bootstrap(settings, governance_config=config)

    return make


def entry(i: int, pnl: float, **fields: str) -> dict[str, str]:
    values = {
        "timestamp": (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", ""),
        "symbol": "BTCUSDT" if i % 2 else "ETHUSDT",
        "side": "LONG",
        "leverage": "20",
        "pnl": repr(pnl),
        "confidence": "0.8",
        "volatility": "0.5",
        "position_size": "1000",
        "exit_reason": "dynamic_tp",
    }
    values.update(fields)
    return values


async def recorded(container: Container, n: int) -> None:
    async def done() -> bool:
        return len(container.governance.memory) == n and container.governance.consumer.state == "running"

    await wait_until(done, seconds=5)


async def test_60_events_publish_the_expected_policy_score_and_params(
    redis: Redis, make_container: Callable[..., Container]
) -> None:
    # 45 wins of +1.2 % and 15 losses of -0.5 %: avg_pnl 0.775, win rate 0.75, confidence 0.8, volatility 0.5
    for i in range(60):
        await redis.xadd(STREAM, entry(i, 1.2 if i % 4 else -0.5))
    expected = 0.775 * 0.8 * 0.75 / 0.5  # 0.93 > 0.7 + hysteresis: AGGRESSIVE
    container = make_container()
    async with running(container) as client:
        await recorded(container, 60)
        body = (await client.post("/api/governance/evaluate")).json()
        assert body["policy"] == "AGGRESSIVE" and body["score"] == pytest.approx(expected)
        assert (await redis.get(KEY_POLICY)) == b"AGGRESSIVE"
        assert float(await redis.get(KEY_SCORE) or b"nan") == pytest.approx(expected)
        params = json.loads(await redis.get(KEY_PARAMS) or b"{}")
        assert {k: params[k] for k in ("max_leverage", "min_confidence", "max_positions")} == {
            "max_leverage": 30,
            "min_confidence": 0.55,
            "max_positions": 7,
        }
        assert await redis.get(KEY_PARAM + "max_leverage") == b"30"
        assert await redis.get(KEY_PARAM + "min_confidence") == b"0.55"
        assert await redis.get(KEY_PARAM + "max_positions") == b"7"
        changes = await redis.xrange(EVENTS_STREAM)
        assert len(changes) == 1
        fields = changes[0][1]
        assert (fields[b"from"], fields[b"to"]) == (b"BALANCED", b"AGGRESSIVE")
        assert float(fields[b"score"]) == pytest.approx(expected) and fields[b"reason"] and fields[b"time"]
        # re-evaluating without a change publishes the keys again but no second change event
        await client.post("/api/governance/evaluate")
        assert len(await redis.xrange(EVENTS_STREAM)) == 1
        status = (await client.get("/api/governance/status")).json()
        assert status["consumer"]["state"] == "running" and status["consumer"]["recorded"] == 60
        assert status["changes"][0]["policy"] == "AGGRESSIVE"
        # losses turn it CONSERVATIVE: the window's newest 500 now hold 60 + 100 losing events
        for i in range(60, 160):
            await redis.xadd(STREAM, entry(i, -1.0))
        await recorded(container, 160)
        assert (await client.post("/api/governance/evaluate")).json()["policy"] == "CONSERVATIVE"
        assert (await redis.get(KEY_POLICY)) == b"CONSERVATIVE"
        assert await redis.get(KEY_PARAM + "max_leverage") == b"10"
        assert [c[1][b"to"] for c in await redis.xrange(EVENTS_STREAM)] == [b"AGGRESSIVE", b"CONSERVATIVE"]
        # The new policy is a layer of RiskGuard's stack: a trade NORMAL allows is denied, naming it.
        conservative = Decimal(str(LIMITS[PortfolioPolicy.CONSERVATIVE].min_confidence))
        between = (DEFAULT_PROFILES[RiskMode.NORMAL].global_min_confidence + conservative) / 2
        denied = await client.post("/trades", json=trade_body(confidence=str(between)))
        assert denied.status_code == 403
        assert [r["detail"] for r in denied.json()["reasons"]] == [
            f"MIN_CONFIDENCE: confidence={between} min={conservative} governance=CONSERVATIVE"
        ]
        effective = (await client.get("/api/v2/policy/effective")).json()["limits"]
        assert effective["max_open_positions"] == {"value": 3, "layer": "governance", "source": "CONSERVATIVE"}
        assert effective["max_leverage"] == {"value": "5", "layer": "profile", "source": "NORMAL"}


async def test_a_restart_mid_stream_neither_double_counts_nor_skips(
    redis: Redis, make_container: Callable[..., Container]
) -> None:
    ids = [await redis.xadd(STREAM, entry(i, float(i))) for i in range(30)]
    first = make_container()
    group, consumer = first.governance.config.group, first.governance.config.consumer
    async with running(first):
        await recorded(first, 30)
    # while it is down: 20 new entries, 5 of them delivered to this consumer and never acknowledged
    # (a crash between delivery and XACK), then 10 more
    ids += [await redis.xadd(STREAM, entry(i, float(i))) for i in range(30, 50)]
    delivered = await redis.xreadgroup(group, consumer, {STREAM: ">"}, count=5)
    assert len(delivered[0][1]) == 5
    ids += [await redis.xadd(STREAM, entry(i, float(i))) for i in range(50, 60)]

    second = make_container()
    async with running(second) as client:
        await recorded(second, 60)
        memory = second.governance.memory
        assert [e.pnl for e in memory.events()] == [float(i) for i in range(60)]  # each once, in order
        keys = [key for key, _ in memory._events]
        assert keys == [f"stream:{i.decode()}" for i in ids]
        pending = await redis.xpending(STREAM, group)
        assert pending["pending"] == 0
        # new entries after the restart are consumed once as well
        await redis.xadd(STREAM, entry(60, 60.0))
        await recorded(second, 61)
        status = (await client.get("/api/governance/status")).json()
        assert status["memory"]["samples"] == 61 and status["consumer"]["last_id"] is not None


async def test_a_malformed_entry_is_skipped_counted_and_acknowledged(
    redis: Redis, make_container: Callable[..., Container]
) -> None:
    container = make_container()
    async with running(container) as client:
        await recorded(container, 0)
        await redis.xadd(STREAM, entry(0, 0.5))
        await redis.xadd(STREAM, {**entry(1, 0.5), "pnl": "nan"})
        await redis.xadd(STREAM, {"garbage": "1"})
        await redis.xadd(STREAM, entry(2, 0.5, side="SIDEWAYS"))
        await redis.xadd(STREAM, entry(3, 0.5))
        await recorded(container, 2)

        async def rejected() -> bool:
            return container.governance.memory.rejected == 3

        await wait_until(rejected, seconds=5)
        assert (await redis.xpending(STREAM, container.governance.config.group))["pending"] == 0
        body = (await client.get("/api/governance/status")).json()
        assert body["memory"]["rejected"] == 3 and body["consumer"]["rejected"] == 3
        assert body["consumer"]["state"] == "running"
        await redis.xadd(STREAM, entry(4, 0.5))
        await recorded(container, 3)  # the consumer kept going


async def test_a_restart_restores_the_published_policy_without_a_change_event(
    redis: Redis, make_container: Callable[..., Container]
) -> None:
    for i in range(60):
        await redis.xadd(STREAM, entry(i, -1.0))
    first = make_container()
    async with running(first):
        await recorded(first, 60)
        assert (await first.governance.evaluate()).policy.value == "CONSERVATIVE"
    assert (await redis.get(KEY_POLICY)) == b"CONSERVATIVE"
    second = make_container()
    async with running(second) as client:
        await recorded(second, 60)
        body = (await client.post("/api/governance/evaluate")).json()
        assert body["policy"] == "CONSERVATIVE" and body["inputs"]["previous"] == "CONSERVATIVE"
        # The stored change is shown again, and where the policy came from; no new change is made.
        assert [(c["previous"], c["policy"]) for c in body["changes"]] == [("BALANCED", "CONSERVATIVE")]
        assert body["restored"]["policy"] == "CONSERVATIVE" and body["persist_error"] is None
    assert [c[1][b"to"] for c in await redis.xrange(EVENTS_STREAM)] == [b"CONSERVATIVE"]


async def test_a_restart_whose_stream_was_lost_keeps_the_stricter_policy(
    redis: Redis, make_container: Callable[..., Container]
) -> None:
    """The policy is restored from the database, not from Redis: with the stream and every published
    key gone (a Redis without persistence restarted), the restart keeps CONSERVATIVE and says why,
    and a trade that CONSERVATIVE forbids (more than 3 open positions) stays denied."""
    for i in range(60):
        await redis.xadd(STREAM, entry(i, -1.0))
    first = make_container()
    async with running(first):
        await recorded(first, 60)
        assert (await first.governance.evaluate()).policy.value == "CONSERVATIVE"
    await clean(redis)
    second = make_container()
    async with running(second) as client:

        async def synced() -> bool:
            return second.governance.consumer.state == "running"

        await wait_until(synced, seconds=5)
        body = (await client.post("/api/governance/evaluate")).json()
        assert body["policy"] == "CONSERVATIVE"
        assert "insufficient samples: 0 < MIN_SAMPLES 50" in body["reason"]
        assert "never loosened without evidence" in body["reason"]
        assert await redis.get(KEY_POLICY) == b"CONSERVATIVE"
        for symbol, price in (("BTCUSDT", "60000"), ("ETHUSDT", "3000"), ("XRPUSDT", "2")):
            body = trade_body(symbol=symbol, price=price, stop_loss=str(float(price) * 0.98), confidence="0.9")
            opened = await client.post("/trades", json=body)
            assert opened.status_code == 201, opened.text
        body = trade_body(symbol="ADAUSDT", price="1", stop_loss="0.98", confidence="0.9")
        denied = await client.post("/trades", json=body)
        assert denied.status_code == 403, denied.text
        assert any("governance=CONSERVATIVE" in r["detail"] for r in denied.json()["reasons"])
