"""/api/v2/policy: profiles, runtime switches, validated overrides, audit trail."""

from collections.abc import Callable

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.policy.events import RiskModeChanged
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from tests.support import EventRecorder, running

Api = tuple[httpx.AsyncClient, Container]
FIELDS = {
    "max_leverage",
    "max_risk_pct_per_trade",
    "max_daily_drawdown_pct",
    "emergency_drawdown_pct",
    "max_open_positions",
    "position_size_cap_usd",
    "global_min_confidence",
    "allow_new_positions",
}


async def test_risk_modes_lists_every_profile_and_the_active_one(api: Api) -> None:
    client, _ = api
    body = (await client.get("/api/v2/policy/risk-modes")).json()
    assert body["active"] == "NORMAL"
    by_name = {p["name"]: p for p in body["profiles"]}
    assert set(by_name) == {"AGGRESSIVE_SMALL_ACCOUNT", "NORMAL", "DEFENSIVE"}
    for profile in by_name.values():
        assert set(profile) >= FIELDS
    assert by_name["DEFENSIVE"]["emergency_drawdown_pct"] == 4.8
    assert by_name["AGGRESSIVE_SMALL_ACCOUNT"]["position_size_cap_usd"] == 300


async def test_switch_mode_is_immediate_and_audited(api: Api, recorder: EventRecorder) -> None:
    client, container = api
    response = await client.post(
        "/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "CPI release"}, headers={"X-Actor": "alice"}
    )
    assert response.status_code == 200
    assert response.json()["name"] == "DEFENSIVE" and response.json()["max_leverage"] == 3
    active = (await client.get("/api/v2/policy/risk-profile")).json()
    defensive = float(DEFAULT_PROFILES[RiskMode.DEFENSIVE].global_min_confidence)
    assert active["name"] == "DEFENSIVE" and active["global_min_confidence"] == defensive
    trade = await client.post(
        "/trades",
        json={
            "symbol": "BTCUSDT",
            "side": "LONG",
            "notional": "250",
            "leverage": "4",
            "price": "60000",
            "confidence": "0.8",
            "stop_loss": "59000",
        },
    )
    assert trade.json()["reasons"][0]["detail"] == "MAX_LEVERAGE: requested=4 max=3 profile=DEFENSIVE"
    history = (await client.get("/api/v2/policy/history")).json()
    change = history["items"][0]
    assert (change["kind"], change["from_value"], change["to_value"]) == ("RISK_MODE", "NORMAL", "DEFENSIVE")
    assert (change["reason"], change["actor"]) == ("CPI release", "alice")
    assert change["trace_id"] == response.headers["x-trace-id"]
    await container.bus.drain()
    assert [(e.from_mode, e.to_mode) for e in recorder.of(RiskModeChanged)] == [("NORMAL", "DEFENSIVE")]


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "YOLO", "reason": "because"},
        {"mode": "DEFENSIVE"},
        {"mode": "DEFENSIVE", "reason": ""},
        {"reason": "no mode"},
    ],
)
async def test_bad_mode_switch_is_422_and_changes_nothing(api: Api, body: dict[str, str]) -> None:
    client, _ = api
    response = await client.post("/api/v2/policy/risk-mode", json=body)
    assert response.status_code == 422
    assert (await client.get("/api/v2/policy/risk-profile")).json()["name"] == "NORMAL"
    assert (await client.get("/api/v2/policy/history")).json()["total"] == 0


async def test_override_then_reset(api: Api) -> None:
    client, _ = api
    response = await client.patch(
        "/api/v2/policy/risk-profile", json={"max_leverage": 4, "global_min_confidence": 0.7, "reason": "tighten"}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["max_leverage"], body["global_min_confidence"]) == (4, 0.7)
    assert body["overridden_fields"] == ["global_min_confidence", "max_leverage"]
    await client.patch("/api/v2/policy/risk-profile", json={"max_open_positions": 7, "reason": "more"})
    merged = (await client.get("/api/v2/policy/risk-profile")).json()
    assert (merged["max_leverage"], merged["max_open_positions"]) == (4, 7)
    # overrides belong to the profile they were made on
    await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "switch"})
    assert (await client.get("/api/v2/policy/risk-profile")).json()["max_open_positions"] == 10
    await client.post("/api/v2/policy/risk-mode", json={"mode": "NORMAL", "reason": "back"})
    assert (await client.get("/api/v2/policy/risk-profile")).json()["max_open_positions"] == 7
    reset = await client.post("/api/v2/policy/risk-profile/reset", json={"reason": "defaults"})
    assert reset.status_code == 200
    assert (reset.json()["max_leverage"], reset.json()["overridden_fields"]) == (5, [])
    assert (await client.post("/api/v2/policy/risk-profile/reset", json={"reason": "again"})).status_code == 409
    kinds = [c["kind"] for c in (await client.get("/api/v2/policy/history")).json()["items"]]
    assert kinds == ["PROFILE_RESET", "RISK_MODE", "RISK_MODE", "PROFILE_OVERRIDE", "PROFILE_OVERRIDE"]


@pytest.mark.parametrize(
    "patch",
    [
        {"max_leverage": -1},
        {"max_leverage": 0},
        {"max_leverage": 126},
        {"max_risk_pct_per_trade": "NaN"},
        {"position_size_cap_usd": "Infinity"},
        {"global_min_confidence": 1.2},
        {"max_open_positions": -3},
        {"max_open_positions": 2.5},
        {"emergency_drawdown_pct": 4.0},
        {"max_daily_drawdown_pct": 9.0},
        {"allow_new_positions": None},
        {"unknown_field": 1},
        {},
    ],
)
async def test_bad_override_is_422_and_changes_nothing(api: Api, patch: dict[str, object]) -> None:
    client, _ = api
    before = (await client.get("/api/v2/policy/risk-profile")).json()
    response = await client.patch("/api/v2/policy/risk-profile", json={**patch, "reason": "bad input"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert (await client.get("/api/v2/policy/risk-profile")).json() == before
    assert (await client.get("/api/v2/policy/history")).json()["total"] == 0


async def test_emergency_below_daily_names_both_fields(api: Api) -> None:
    client, _ = api
    response = await client.patch("/api/v2/policy/risk-profile", json={"emergency_drawdown_pct": 4, "reason": "bad"})
    assert "emergency_drawdown_pct" in response.json()["detail"]
    assert "max_daily_drawdown_pct" in response.json()["detail"]


async def test_history_is_newest_first_and_paginated(api: Api) -> None:
    client, _ = api
    for mode in ["DEFENSIVE", "NORMAL", "AGGRESSIVE_SMALL_ACCOUNT", "NORMAL", "DEFENSIVE"]:
        assert (
            await client.post("/api/v2/policy/risk-mode", json={"mode": mode, "reason": f"to {mode}"})
        ).status_code == 200
    page = (await client.get("/api/v2/policy/history", params={"limit": 2})).json()
    assert page["total"] == 5
    assert [c["to_value"] for c in page["items"]] == ["DEFENSIVE", "NORMAL"]
    rest = (await client.get("/api/v2/policy/history", params={"limit": 2, "offset": 4})).json()
    assert [c["to_value"] for c in rest["items"]] == ["DEFENSIVE"]
    assert rest["items"][0]["from_value"] == "NORMAL"


async def test_initial_mode_comes_from_settings(make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings(quantum_risk_mode="DEFENSIVE"))
    async with running(container) as client:
        assert (await client.get("/api/v2/policy/risk-profile")).json()["name"] == "DEFENSIVE"
