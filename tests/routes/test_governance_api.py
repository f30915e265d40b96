"""/api/governance on the embedded app: in-process TradeClosed events feed the memory, no Redis."""

from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.governance import repository
from app.domains.governance.memory import MemoryEvent
from app.domains.governance.policy import LIMITS, PortfolioPolicy
from app.domains.governance.service import GovernanceConfig
from app.domains.risk.guard import SafetyView
from tests.support import FakeClock, running, trade_body, wait_until

Api = tuple[httpx.AsyncClient, Container]


async def round_trip(client: httpx.AsyncClient, close_price: str, i: int, **overrides: str) -> dict[str, str]:
    opened = await client.post("/trades", json=trade_body(client_order_id=f"gov-{i}", **overrides))
    assert opened.status_code == 201, opened.text
    closed = await client.post(f"/trades/{opened.json()['trade']['id']}/close", json={"price": close_price})
    assert closed.status_code == 200, closed.text
    trade: dict[str, str] = closed.json()["trade"] if "trade" in closed.json() else closed.json()
    return trade


async def rebuilt(container: Container) -> None:
    async def done() -> bool:
        return container.governance.rebuilt and container.governance.decision is not None

    await wait_until(done, seconds=5)


async def test_status_starts_balanced_without_streams(api: Api) -> None:
    client, container = api
    await rebuilt(container)
    response = await client.get("/api/governance/status")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["policy"] == "BALANCED"
    balanced = LIMITS[PortfolioPolicy.BALANCED]
    assert body["limits"] == {"max_leverage": 20, "min_confidence": balanced.min_confidence, "max_positions": 5}
    assert "insufficient samples: 0 < MIN_SAMPLES 50" in body["reason"]
    assert body["memory"]["samples"] == 0 and body["memory"]["rebuilt"] is True
    assert body["consumer"]["enabled"] is False and body["consumer"]["state"] == "disabled"
    assert body["thresholds"] == {"conservative": 0.3, "aggressive": 0.7, "hysteresis": 0.05, "min_samples": 50}
    assert container.governance.current_limits().policy == "BALANCED"


async def test_evaluate_needs_the_key(api: Api) -> None:
    client, _ = api
    response = await client.post("/api/governance/evaluate", headers={"X-API-Key": "wrong"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_closed_trades_are_recorded_as_return_on_margin_once_each(api: Api) -> None:
    client, container = api
    await rebuilt(container)
    await round_trip(client, "60600", 0)  # +1 % price move at leverage 2: about +2 % on the margin, less fees
    await round_trip(client, "59700", 1, symbol="ETHUSDT", price="3000", stop_loss="2900")
    await container.bus.drain()
    events = container.governance.memory.events()
    assert len(events) == 2
    # notional 250, leverage 2 -> margin 125; pnl = 250 * 0.01 - fees (0.0004 * (250 + 252.5)) = 2.299
    assert events[0].pnl == pytest.approx(float(Decimal("2.299") / 125 * 100), abs=1e-3)
    assert events[0].leverage == 2 and events[0].confidence == 0.8 and events[0].volatility is None
    # the same TradeClosed again is not counted twice
    for event in list(container.governance.memory.events()):
        assert isinstance(event, MemoryEvent)
    trade_ids = [key for key, _ in container.governance.memory._events]
    await container.governance.on_trade_closed(type("E", (), {"trade_id": trade_ids[0].split(":", 1)[1]})())  # type: ignore[arg-type]
    assert len(container.governance.memory) == 2
    body = (await client.post("/api/governance/evaluate")).json()
    assert body["inputs"]["count"] == 2 and body["inputs"]["volatility_samples"] == 0
    assert set(body["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    assert body["symbols"]["BTCUSDT"]["win_rate"] == 1.0
    assert body["memory"]["samples"] == 2 and body["decided_at"] is not None


async def test_a_restart_rebuilds_the_window_from_the_trades_table(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make_settings(min_samples=2)
    first = bootstrap(settings, clock=clock)
    async with running(first) as client:
        await rebuilt(first)
        for i in range(3):
            await round_trip(client, "60600", i)
        await first.bus.drain()
        before = first.governance.memory.summary()
    second = bootstrap(settings, clock=clock)
    async with running(second) as client:
        await rebuilt(second)
        assert second.governance.memory.summary() == before
        body = (await client.get("/api/governance/status")).json()
        # trades carry no volatility: the score is undefined and the policy stays BALANCED, saying why
        assert body["policy"] == "BALANCED" and body["score"] is None
        assert "no event in the window has a volatility" in body["reason"]


async def test_the_timer_re_evaluates_and_stops_with_the_app(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    container = bootstrap(make_settings(), clock=clock, governance_config=GovernanceConfig(update_interval=0.05))
    async with running(container):
        await rebuilt(container)
        first = container.governance.decided_at
        clock.advance(seconds=10)

        async def re_decided() -> bool:
            return container.governance.decided_at != first

        await wait_until(re_decided, seconds=2)
    assert container.governance._tasks == []  # cancelled and awaited on shutdown


async def test_an_unreachable_redis_is_retried_and_shown(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    config = GovernanceConfig(
        redis_url="redis://127.0.0.1:1/0", redis_timeout=0.2, backoff_initial=0.05, backoff_max=0.1, block_ms=50
    )
    container = bootstrap(make_settings(), clock=clock, governance_config=config)
    async with running(container) as client:

        async def retried() -> bool:
            return container.governance.consumer.retries >= 2

        await wait_until(retried, seconds=5)
        body = (await client.post("/api/governance/evaluate")).json()
        assert body["consumer"]["state"] == "unreachable" and body["consumer"]["last_error"]
        assert body["consumer"]["publish_error"] and body["policy"] == "BALANCED"


async def test_the_policy_is_stored_and_a_restart_without_the_events_keeps_it(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """Embedded default (SQLite, no Redis): a change is a stored row with its inputs; a restart whose
    memory lost the events that decided it restores CONSERVATIVE and does not loosen it."""
    settings = make_settings(min_samples=5, governance_limits_enabled=True)
    first = bootstrap(settings, clock=clock)
    async with running(first) as client:
        await rebuilt(first)
        for i in range(5):
            first.governance.memory.record(
                f"external:{i}", MemoryEvent(clock(), "BTCUSDT", "LONG", 10.0, -1.0, 0.8, 0.5, 1000.0, "sl")
            )
        body = (await client.post("/api/governance/evaluate")).json()
        assert body["policy"] == "CONSERVATIVE" and body["persist_error"] is None
    async with first.sessions() as session:
        stored = await repository.latest_decision(session, settings.account_id)
    assert stored is not None
    assert (stored.previous, stored.policy, stored.trigger) == ("BALANCED", "CONSERVATIVE", "request")
    assert stored.score == pytest.approx(-1.0 * 0.8 * 0.0 / 0.5)
    assert stored.inputs["count"] == 5 and stored.inputs["previous"] == "BALANCED"

    second = bootstrap(settings, clock=clock)
    async with running(second) as client:
        await rebuilt(second)
        body = (await client.get("/api/governance/status")).json()
        assert body["policy"] == "CONSERVATIVE" and body["memory"]["samples"] == 0
        assert "never loosened without evidence" in body["reason"]
        assert body["restored"]["policy"] == "CONSERVATIVE"
        calm = SafetyView(halted=False, state="NORMAL", reason="")
        limits = second.guard.limits(second.policy_store.snapshot.profile, calm)
        assert limits.max_open_positions.by == "governance=CONSERVATIVE"
