"""PolicyStore on the real Redis: propagation between instances, outage, recovery, CAS."""

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.policy.profiles import ProfileOverrides, RiskMode
from app.domains.policy.state import PolicyState
from tests.conftest import TEST_REDIS_URL
from tests.support import TcpProxy, running, trade_body, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_settings(make_settings: Callable[..., Settings], redis_prefix: str) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values = {"redis_url": TEST_REDIS_URL, "redis_prefix": redis_prefix, "policy_poll_interval_seconds": 0.2}
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
async def proxy() -> TcpProxy:
    target = urlsplit(TEST_REDIS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    yield proxy  # type: ignore[misc]
    await proxy.stop()


async def test_mode_switch_is_in_force_in_a_second_instance_within_100ms(
    redis_settings: Callable[..., Settings],
) -> None:
    a, b = bootstrap(redis_settings()), bootstrap(redis_settings())
    async with running(a) as client_a, running(b) as client_b:
        lags = []
        for mode in ["DEFENSIVE", "AGGRESSIVE_SMALL_ACCOUNT", "NORMAL", "DEFENSIVE", "NORMAL"]:
            response = await client_a.post("/api/v2/policy/risk-mode", json={"mode": mode, "reason": "propagation"})
            returned = time.perf_counter()
            assert response.status_code == 200
            assert a.policy_store.snapshot.mode.value == mode  # in force here before the response

            async def seen(expected: str = mode) -> bool:
                return b.policy_store.snapshot.mode.value == expected

            await wait_until(seen, seconds=1.0, step=0.001)
            lags.append(time.perf_counter() - returned)
            assert (await client_b.get("/api/v2/policy/risk-profile")).json()["name"] == mode
        assert max(lags) < 0.1, lags
        trade = await client_b.post("/trades", json=trade_body(leverage="4"))
        assert trade.status_code == 201 and trade.json()["decision"]["profile_name"] == "NORMAL"


async def test_outage_keeps_the_last_profile_refuses_changes_and_recovers(
    redis_settings: Callable[..., Settings], proxy: TcpProxy
) -> None:
    container = bootstrap(redis_settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0"))
    async with running(container) as client:
        assert (
            await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "before"})
        ).status_code == 200
        await proxy.stop()

        async def degraded() -> bool:
            return (await client.get("/ready")).json()["status"] == "degraded"

        await wait_until(degraded, seconds=5)
        ready = (await client.get("/ready")).json()["components"]
        assert ready["redis"]["status"] == "down"
        assert ready["policy_store"]["serving"] == "last known profile"
        during = (await client.get("/api/v2/policy/risk-profile")).json()
        assert (during["name"], during["degraded"]) == ("DEFENSIVE", True)

        refused = await client.post("/api/v2/policy/risk-mode", json={"mode": "NORMAL", "reason": "during outage"})
        assert refused.status_code == 503 and refused.json()["error"] == "service_unavailable"
        patch = await client.patch("/api/v2/policy/risk-profile", json={"max_leverage": 2, "reason": "during outage"})
        assert patch.status_code == 503
        trade = await client.post("/trades", json=trade_body(leverage="3"))
        assert trade.status_code == 201 and trade.json()["decision"]["profile_name"] == "DEFENSIVE"

        await proxy.start()

        async def ready_again() -> bool:
            return (await client.get("/ready")).json()["components"]["policy_store"]["status"] == "up"

        await wait_until(ready_again, seconds=10)
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert (profile["name"], profile["max_leverage"], profile["degraded"]) == ("DEFENSIVE", 3, False)
        history = (await client.get("/api/v2/policy/history")).json()
        assert [c["reason"] for c in history["items"]] == ["before"]
        assert (
            await client.post("/api/v2/policy/risk-mode", json={"mode": "NORMAL", "reason": "after"})
        ).status_code == 200


async def test_first_start_while_redis_is_down_disables_new_positions_until_it_returns(
    redis_settings: Callable[..., Settings], proxy: TcpProxy, redis_prefix: str
) -> None:
    """No durable copy yet and Redis unreachable: nothing says which limits were in force, so no
    new positions (rather than the configured, looser mode) until Redis answers."""
    redis = Redis.from_url(TEST_REDIS_URL)
    await redis.mset(
        {
            f"{redis_prefix}:policy:state": PolicyState(mode=RiskMode.DEFENSIVE).to_json(),
            f"{redis_prefix}:policy:version": "7",
        }
    )
    await redis.aclose()
    await proxy.stop()
    settings = redis_settings(
        redis_url=f"redis://127.0.0.1:{proxy.port}/0", quantum_risk_mode="AGGRESSIVE_SMALL_ACCOUNT"
    )
    container = bootstrap(settings)
    async with running(container) as client:
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert (profile["allow_new_positions"], profile["degraded"]) == (False, True)
        assert "unreachable" in profile["restore_error"]
        trade = await client.post("/trades", json=trade_body())
        assert trade.status_code == 403
        assert [r["code"] for r in trade.json()["reasons"]] == ["NEW_POSITIONS_DISABLED"]
        await proxy.start()

        async def defensive() -> bool:
            body = (await client.get("/api/v2/policy/risk-profile")).json()
            return bool(body["name"] == "DEFENSIVE" and body["allow_new_positions"])

        await wait_until(defensive, seconds=10)
        assert (await container.policy_store.durable.load()) == PolicyState(mode=RiskMode.DEFENSIVE, version=7)


async def test_lost_redis_state_is_reseeded_from_the_last_known(
    redis_settings: Callable[..., Settings], redis_prefix: str
) -> None:
    container = bootstrap(redis_settings())
    async with running(container) as client:
        await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "before flush"})
        redis = Redis.from_url(TEST_REDIS_URL)
        await redis.delete(f"{redis_prefix}:policy:state", f"{redis_prefix}:policy:version")

        async def reseeded() -> bool:
            return await redis.get(f"{redis_prefix}:policy:state") is not None

        await wait_until(reseeded, seconds=5)
        assert b'"DEFENSIVE"' in (await redis.get(f"{redis_prefix}:policy:state") or b"")
        await redis.aclose()
        assert container.policy_store.snapshot.mode is RiskMode.DEFENSIVE


async def test_concurrent_overrides_from_two_stores_lose_nothing(
    redis_settings: Callable[..., Settings],
) -> None:
    a, b = bootstrap(redis_settings()), bootstrap(redis_settings())
    async with running(a), running(b):
        changes = [
            (a if i % 2 else b).policy.override(
                ProfileOverrides(**{("max_open_positions" if i % 2 else "position_size_cap_usd"): 100 + i}),
                reason="race",
                actor="test",
                trace_id=f"t{i}",
            )
            for i in range(20)
        ]
        await asyncio.gather(*changes)
        await a.policy_store.refresh()
        overrides = a.policy_store.snapshot.state.overrides["NORMAL"]
        assert set(overrides) == {"max_open_positions", "position_size_cap_usd"}
        items, total = await a.policy.history(limit=100, offset=0, kind="PROFILE_OVERRIDE")
        assert total == len(items) == 20
        assert a.policy_store.snapshot.state.version == 21
