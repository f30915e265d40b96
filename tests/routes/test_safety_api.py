"""SafetyGovernor through the API: daily halt, emergency and reset, losing streak, restart."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.safety.events import SafetyStateChanged
from tests.support import EventRecorder, FakeClock, running

ETH_LONG = {
    "symbol": "ETHUSDT",
    "side": "LONG",
    "notional": "300",
    "leverage": "2",
    "price": "3000",
    "confidence": "0.8",
    "stop_loss": "2950",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))


@pytest.fixture
async def small(
    make_settings: Callable[..., Settings], clock: FakeClock, recorder: EventRecorder
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    """A 1,000 USDT paper account."""
    container = bootstrap(make_settings(paper_starting_balance=1000), clock=clock, handlers=recorder.table())
    async with running(container) as client:
        yield client, container


async def trade_and_close(client: httpx.AsyncClient, exit_price: str) -> dict[str, str]:
    opened = await client.post("/trades", json=ETH_LONG)
    assert opened.status_code == 201, opened.text
    closed = await client.post(f"/trades/{opened.json()['trade']['id']}/close", json={"price": exit_price})
    assert closed.status_code == 200
    return dict(closed.json())


async def status(client: httpx.AsyncClient) -> dict[str, object]:
    return dict((await client.get("/api/v2/safety/status")).json())


async def test_daily_drawdown_halts_until_utc_midnight(
    small: tuple[httpx.AsyncClient, Container], clock: FakeClock, recorder: EventRecorder
) -> None:
    client, container = small
    closed = await trade_and_close(client, "2500")  # -50 and fees: 5.02 % of 1,000
    assert Decimal(closed["realized_pnl"]) == Decimal("-50.22")
    s = await status(client)
    assert (s["state"], s["halted"], s["emergency"]) == ("HALTED", True, False)
    assert s["daily_drawdown_pct"] == "5.022"
    assert s["halted_until"] == "2026-03-11T00:00:00Z"
    denied = await client.post("/trades", json=ETH_LONG)
    assert denied.status_code == 403
    assert [r["code"] for r in denied.json()["reasons"]] == ["SAFETY_HALTED", "DAILY_DRAWDOWN"]
    await container.bus.drain()
    assert [(e.from_state, e.to_state) for e in recorder.of(SafetyStateChanged)] == [("ACTIVE", "HALTED")]
    ready = (await client.get("/ready")).json()
    assert ready["components"]["safety_governor"]["state"] == "HALTED"

    clock.now = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC)
    s = await status(client)
    assert (s["state"], s["halted"], s["day_start_equity"]) == ("ACTIVE", False, "949.78")
    assert (await client.post("/trades", json=ETH_LONG)).status_code == 201


async def test_emergency_needs_an_operator_reset(small: tuple[httpx.AsyncClient, Container], clock: FakeClock) -> None:
    client, _ = small
    await trade_and_close(client, "2200")  # -80 and fees: 8.02 % >= 8 % (NORMAL)
    s = await status(client)
    assert (s["state"], s["emergency"], s["halted_until"]) == ("HALTED", True, None)
    clock.advance(days=2)
    s = await status(client)
    assert (s["state"], s["halted"], s["emergency"]) == ("HALTED", True, True)
    assert [r["code"] for r in (await client.post("/trades", json=ETH_LONG)).json()["reasons"]] == ["SAFETY_HALTED"]

    client.headers.pop("X-API-Key")
    assert (await client.post("/api/v2/safety/reset", json={"reason": "reviewed"})).status_code == 401
    from tests.support import API_KEY

    client.headers["X-API-Key"] = API_KEY
    reset = await client.post(
        "/api/v2/safety/reset", json={"reason": "reviewed the losses"}, headers={"X-Actor": "bob"}
    )
    assert reset.status_code == 200
    assert (reset.json()["state"], reset.json()["emergency"]) == ("ACTIVE", False)
    assert (await client.post("/trades", json=ETH_LONG)).status_code == 201
    audit = (await client.get("/api/v2/policy/history", params={"kind": "SAFETY_RESET"})).json()["items"][0]
    assert (audit["actor"], audit["reason"]) == ("bob", "reviewed the losses")
    assert audit["from_value"]["emergency"] is True and audit["to_value"]["emergency"] is False
    assert (await client.post("/api/v2/safety/reset", json={"reason": "again"})).status_code == 409


async def test_reset_on_the_same_day_keeps_the_daily_halt(
    small: tuple[httpx.AsyncClient, Container], clock: FakeClock
) -> None:
    client, _ = small
    await trade_and_close(client, "2200")
    reset = (await client.post("/api/v2/safety/reset", json={"reason": "reviewed"})).json()
    assert (reset["state"], reset["emergency"], reset["halted_until"]) == ("HALTED", False, "2026-03-11T00:00:00Z")


async def test_losing_streak_halves_leverage_and_wins_restore_it(
    small: tuple[httpx.AsyncClient, Container],
) -> None:
    client, _ = small
    for _ in range(3):
        await trade_and_close(client, "2990")  # small losses, far from the drawdown limits
    s = await status(client)
    assert (s["state"], s["losing_streak"], s["leverage_multiplier"], s["effective_max_leverage"]) == (
        "REDUCING",
        3,
        "0.5",
        "2.5",
    )
    denied = await client.post("/trades", json={**ETH_LONG, "leverage": "3"})
    assert denied.json()["reasons"][0]["detail"] == (
        "MAX_LEVERAGE: requested=3 max=2.5 (streak multiplier 0.5 safety=REDUCING) profile=NORMAL"
    )
    await trade_and_close(client, "3100")
    assert (await status(client))["leverage_multiplier"] == "0.5"
    await trade_and_close(client, "3100")
    s = await status(client)
    assert (s["state"], s["losing_streak"], s["winning_streak"], s["leverage_multiplier"]) == ("ACTIVE", 0, 2, "1")


async def test_governor_state_survives_a_restart(make_settings: Callable[..., Settings], clock: FakeClock) -> None:
    settings = make_settings(paper_starting_balance=1000)
    async with running(bootstrap(settings, clock=clock)) as client:
        await trade_and_close(client, "2200")
        before = await status(client)
    clock.advance(hours=1)
    async with running(bootstrap(settings, clock=clock)) as client:
        after = await status(client)
        assert (after["state"], after["emergency"], after["reason"]) == ("HALTED", True, before["reason"])
        assert after["equity"] == before["equity"]
        assert (await client.get("/api/v2/account")).json()["starting_balance"] == "1000"


async def test_metrics_expose_profile_denials_and_drawdown(
    small: tuple[httpx.AsyncClient, Container], clock: FakeClock
) -> None:
    client, container = small
    await trade_and_close(client, "2800")
    await client.post("/trades", json={**ETH_LONG, "leverage": "50"})
    await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "metrics"})
    await container.bus.drain()
    text = (await client.get("/metrics")).text
    assert 'risk_profile_active{profile="DEFENSIVE"} 1.0' in text
    assert 'risk_profile_active{profile="NORMAL"} 0.0' in text
    assert 'trades_denied_total{profile="NORMAL",reason="MAX_LEVERAGE"}' in text
    assert 'trades_approved_total{profile="NORMAL"}' in text
    assert "drawdown_pct 2.0232\n" in text  # (20 + 0.12 + 0.112 fees) / 1000
    assert 'http_request_duration_seconds_count{method="POST",route="/trades",status="201"}' in text
