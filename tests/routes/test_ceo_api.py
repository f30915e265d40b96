"""/api/ceo on the embedded app: the operating mode, its decisions, operator pins, the mode as a layer
of RiskGuard's limit stack, and the mode restored by a restart."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from tests.support import FakeClock, running, trade_body, wait_until

MakeSettings = Callable[..., Settings]
DEFENSIVE = DEFAULT_PROFILES[RiskMode.DEFENSIVE]
NORMAL = DEFAULT_PROFILES[RiskMode.NORMAL]
STATUS_KEYS = {
    "enabled",
    "restored",
    "restore_error",
    "mode",
    "decided",
    "since",
    "pinned",
    "layer",
    "last_evaluation",
    "rules",
    "persist_error",
    "decisions",
}


@asynccontextmanager
async def modes_app(
    make_settings: MakeSettings, clock: FakeClock, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    """The app with operating modes on (unless overridden), its first decision taken and stored."""
    settings = make_settings(**{"modes_enabled": True, **overrides})
    container = bootstrap(settings, clock=clock)
    async with running(container) as client:
        if settings.modes_enabled:

            async def decided() -> bool:  # and stored: the first decision's row has its id
                trail = container.modes.trail()
                return container.modes.last is not None and bool(trail) and all(e.id is not None for e in trail)

            await wait_until(decided, seconds=5)
        yield client, container


async def pin(client: httpx.AsyncClient, mode: str, reason: str = "operator incident", actor: str = "alice") -> Any:
    response = await client.post("/api/ceo/pin", json={"mode": mode, "reason": reason}, headers={"X-Actor": actor})
    assert response.status_code == 200, response.text
    return response.json()


def reasons(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "risk_denied", body
    out: list[dict[str, str]] = body["reasons"]
    return out


def assert_422_naming(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "validation_error", payload
    assert field in payload["detail"], payload
    assert [e["loc"][-1] for e in payload["errors"]] == [field], payload


async def test_status_has_the_documented_shape(make_settings: MakeSettings, clock: FakeClock) -> None:
    async with modes_app(make_settings, clock) as (client, _):
        response = await client.get("/api/ceo/status")
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= STATUS_KEYS
        assert body["enabled"] is True and body["restored"] is True
        assert body["restore_error"] is None and body["persist_error"] is None
        assert body["mode"] == body["decided"] == "OPTIMIZATION"
        assert body["since"] is not None
        assert body["pinned"] is None
        assert body["layer"] == {"layer": "mode", "source": "OPTIMIZATION"}  # adds no limit
        last = body["last_evaluation"]
        assert set(last) == {"mode", "rule_mode", "reason", "inputs", "evaluated_at"}
        assert set(last["inputs"]) == {
            "risk_score",
            "risk_status",
            "drawdown_pct",
            "win_rate",
            "trades",
            "health",
            "unhealthy",
        }
        rules = body["rules"]
        assert rules["critical_risk_score"] == 75.0 and rules["min_dwell_seconds"] == 900.0
        assert rules["min_trades"] == 20.0 and rules["risk_margin"] == 5.0
        assert [d["kind"] for d in body["decisions"]] == ["decision"]
        assert body["decisions"][0]["actor"] == "operating-modes"
        assert body["decisions"][0]["id"] is not None


async def test_evaluate_without_history_is_optimization_and_says_why(
    make_settings: MakeSettings, clock: FakeClock
) -> None:
    async with modes_app(make_settings, clock) as (client, container):
        before = container.modes.evaluations
        clock.advance(seconds=5)
        response = await client.post("/api/ceo/evaluate")
        assert response.status_code == 200, response.text
        body = response.json()
        assert container.modes.evaluations == before + 1
        assert body["mode"] == body["decided"] == "OPTIMIZATION"
        last = body["last_evaluation"]
        assert last["mode"] == last["rule_mode"] == "OPTIMIZATION"
        assert last["evaluated_at"] == clock.now.isoformat().replace("+00:00", "Z")
        inputs = last["inputs"]
        assert inputs["risk_status"] == "insufficient_data" and inputs["risk_score"] is None
        assert inputs["trades"] == 0 and inputs["win_rate"] is None
        assert inputs["drawdown_pct"] == 0.0
        assert inputs["health"] == "healthy" and inputs["unhealthy"] == []
        assert "not expanding" in last["reason"]
        assert "risk score unknown" in last["reason"] and "0 trades < 20" in last["reason"]
        # Staying in the same mode stores no new row.
        assert [d["kind"] for d in body["decisions"]] == ["decision"]
        assert "not expanding" in body["decisions"][0]["reason"]


async def test_pinned_emergency_denies_new_positions_but_closing_works(
    make_settings: MakeSettings, clock: FakeClock
) -> None:
    async with modes_app(make_settings, clock) as (client, _):
        opened = await client.post("/trades", json=trade_body(client_order_id="before-pin"))
        assert opened.status_code == 201, opened.text

        body = await pin(client, "EMERGENCY", reason="exchange incident", actor="alice")
        assert body["mode"] == "EMERGENCY" and body["decided"] == "OPTIMIZATION"
        assert body["pinned"]["mode"] == "EMERGENCY"
        assert body["pinned"]["actor"] == "alice"
        assert body["pinned"]["reason"] == "exchange incident"
        assert body["layer"] == {"layer": "mode", "source": "EMERGENCY", "new_positions_allowed": False}
        status = (await client.get("/api/ceo/status")).json()
        assert status["mode"] == "EMERGENCY" and status["pinned"]["actor"] == "alice"
        assert [d["kind"] for d in status["decisions"]][:1] == ["pin"]

        denied = await client.post("/trades", json=trade_body(client_order_id="after-pin"))
        found = reasons(denied)
        assert [r["code"] for r in found] == ["NEW_POSITIONS_DISABLED"]
        assert "mode=EMERGENCY" in found[0]["detail"]
        assert found[0]["detail"] == "NEW_POSITIONS_DISABLED: mode=EMERGENCY"

        closed = await client.post(f"/trades/{opened.json()['trade']['id']}/close", json={"price": "60300"})
        assert closed.status_code == 200, closed.text
        assert (await client.get("/api/v2/account")).json()["open_positions"] == 0

        effective = (await client.get("/api/v2/policy/effective")).json()
        assert effective["limits"]["new_positions_allowed"] == {"value": False, "layer": "mode", "source": "EMERGENCY"}
        assert [layer["layer"] for layer in effective["layers"]] == ["hard", "profile", "mode", "safety"]


async def test_pinned_preservation_applies_the_defensive_limits(make_settings: MakeSettings, clock: FakeClock) -> None:
    assert DEFENSIVE.max_leverage < NORMAL.max_leverage
    leverage = (Decimal(DEFENSIVE.max_leverage) + Decimal(NORMAL.max_leverage)) / 2
    assert DEFENSIVE.max_leverage < leverage <= NORMAL.max_leverage
    async with modes_app(make_settings, clock) as (client, _):
        allowed = await client.post("/trades", json=trade_body(leverage=str(leverage), client_order_id="p-0"))
        assert allowed.status_code == 201, allowed.text  # NORMAL allows it

        body = await pin(client, "PRESERVATION", reason="weak markets")
        assert body["mode"] == "PRESERVATION"
        assert body["layer"]["source"] == "PRESERVATION"
        assert Decimal(body["layer"]["max_leverage"]) == DEFENSIVE.max_leverage

        denied = await client.post("/trades", json=trade_body(leverage=str(leverage), client_order_id="p-1"))
        found = reasons(denied)
        assert [r["code"] for r in found] == ["MAX_LEVERAGE"]
        assert found[0]["detail"].startswith(f"MAX_LEVERAGE: requested={leverage} max={DEFENSIVE.max_leverage}")
        assert found[0]["detail"].endswith("mode=PRESERVATION")
        # At the defensive maximum it is still allowed: the mode tightens, it does not stop trading.
        at_max = await client.post(
            "/trades", json=trade_body(leverage=str(DEFENSIVE.max_leverage), client_order_id="p-2")
        )
        assert at_max.status_code == 201, at_max.text

        effective = (await client.get("/api/v2/policy/effective")).json()
        limits = effective["limits"]
        assert limits["max_leverage"] == {
            "value": str(DEFENSIVE.max_leverage),
            "layer": "mode",
            "source": "PRESERVATION",
        }
        assert limits["min_confidence"]["layer"] == "mode"
        assert Decimal(limits["min_confidence"]["value"]) == Decimal(str(DEFENSIVE.global_min_confidence))
        assert limits["max_open_positions"] == {
            "value": DEFENSIVE.max_open_positions,
            "layer": "mode",
            "source": "PRESERVATION",
        }
        assert limits["new_positions_allowed"]["value"] is True
        assert [layer["layer"] for layer in effective["layers"]] == ["hard", "profile", "mode", "safety"]
        mode_layer = effective["layers"][2]
        assert mode_layer["source"] == "PRESERVATION"
        assert Decimal(mode_layer["max_leverage"]) == DEFENSIVE.max_leverage
        assert Decimal(mode_layer["position_size_cap_usd"]) == DEFENSIVE.position_size_cap_usd

        body = (await client.post("/api/ceo/unpin", json={"reason": "markets calm"})).json()
        assert body["mode"] == "OPTIMIZATION" and body["pinned"] is None
        again = await client.post("/trades", json=trade_body(leverage=str(leverage), client_order_id="p-3"))
        assert again.status_code == 201, again.text


async def test_effective_limits_show_the_mode_layer(make_settings: MakeSettings, clock: FakeClock) -> None:
    async with modes_app(make_settings, clock) as (client, _):
        effective = (await client.get("/api/v2/policy/effective")).json()
        assert [layer["layer"] for layer in effective["layers"]] == ["hard", "profile", "mode", "safety"]
        assert effective["layers"][2] == {"layer": "mode", "source": "OPTIMIZATION"}
        assert effective["limits"]["max_leverage"] == {"value": "5", "layer": "profile", "source": "NORMAL"}
        assert effective["limits"]["new_positions_allowed"]["value"] is True


async def test_unpin_returns_to_the_decided_mode_and_twice_is_409(
    make_settings: MakeSettings, clock: FakeClock
) -> None:
    async with modes_app(make_settings, clock) as (client, _):
        nothing = await client.post("/api/ceo/unpin", json={"reason": "nothing to release"})
        assert nothing.status_code == 409, nothing.text
        assert nothing.headers["content-type"].startswith("application/json")
        assert nothing.json()["error"] == "conflict"
        assert "pinned" in nothing.json()["detail"]

        await pin(client, "EMERGENCY")
        response = await client.post("/api/ceo/unpin", json={"reason": "incident over"}, headers={"X-Actor": "bob"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mode"] == body["decided"] == "OPTIMIZATION"
        assert body["pinned"] is None
        assert body["layer"] == {"layer": "mode", "source": "OPTIMIZATION"}
        assert (await client.post("/trades", json=trade_body())).status_code == 201

        twice = await client.post("/api/ceo/unpin", json={"reason": "again"})
        assert twice.status_code == 409 and twice.json()["error"] == "conflict"
        kinds = [d["kind"] for d in (await client.get("/api/ceo/decisions")).json()["items"]]
        assert kinds == ["unpin", "pin", "decision"]  # the refused unpins left no row


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "PANIC", "reason": "unknown mode"}, "mode"),
        ({"mode": "emergency", "reason": "lower case"}, "mode"),
        ({"mode": "EMERGENCY", "reason": "ab"}, "reason"),
        ({"mode": "EMERGENCY"}, "reason"),
        ({"mode": "EMERGENCY", "reason": "fine", "actor": "x"}, "actor"),
    ],
)
async def test_pin_with_a_bad_body_is_422_naming_the_field(
    make_settings: MakeSettings, clock: FakeClock, body: dict[str, str], field: str
) -> None:
    async with modes_app(make_settings, clock) as (client, _):
        assert_422_naming(await client.post("/api/ceo/pin", json=body), field)
        assert_422_naming(await client.post("/api/ceo/unpin", json={"reason": "ab"}), "reason")
        status = (await client.get("/api/ceo/status")).json()
        assert status["pinned"] is None and status["mode"] == "OPTIMIZATION"
        assert [d["kind"] for d in (await client.get("/api/ceo/decisions")).json()["items"]] == ["decision"]


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789"])
async def test_mutating_ceo_routes_need_the_key(make_settings: MakeSettings, clock: FakeClock, key: str | None) -> None:
    async with modes_app(make_settings, clock) as (client, container):
        await pin(client, "PRESERVATION")  # so that an unpin would change something
        evaluations = container.modes.evaluations
        client.headers.pop("X-API-Key", None)
        headers = {"X-API-Key": key} if key else {}
        for path, body in [
            ("/api/ceo/pin", {"mode": "EMERGENCY", "reason": "no key"}),
            ("/api/ceo/unpin", {"reason": "no key"}),
            ("/api/ceo/evaluate", None),
        ]:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"] == "unauthorized"
        assert container.modes.evaluations == evaluations
        status = await client.get("/api/ceo/status")  # reads need no key
        assert status.status_code == 200
        assert status.json()["pinned"]["mode"] == "PRESERVATION"
        assert (await client.get("/api/ceo/decisions")).status_code == 200
        kinds = [d["kind"] for d in (await client.get("/api/ceo/decisions")).json()["items"]]
        assert kinds == ["pin", "decision"]


async def test_decisions_page_the_stored_trail(make_settings: MakeSettings, clock: FakeClock) -> None:
    async with modes_app(make_settings, clock) as (client, _):
        clock.advance(seconds=10)
        await pin(client, "EMERGENCY", reason="exchange incident", actor="alice")
        clock.advance(seconds=10)
        await client.post("/api/ceo/unpin", json={"reason": "incident over"}, headers={"X-Actor": "bob"})

        page = (await client.get("/api/ceo/decisions")).json()
        assert (page["limit"], page["offset"]) == (50, 0)
        items = page["items"]
        assert [i["kind"] for i in items] == ["unpin", "pin", "decision"]
        assert items[0]["id"] > items[1]["id"] > items[2]["id"]
        unpin, pinned, decision = items
        assert (unpin["actor"], unpin["reason"], unpin["previous"], unpin["mode"], unpin["pinned"]) == (
            "bob",
            "incident over",
            "EMERGENCY",
            "OPTIMIZATION",
            None,
        )
        assert (pinned["actor"], pinned["reason"], pinned["previous"], pinned["mode"], pinned["pinned"]) == (
            "alice",
            "exchange incident",
            "OPTIMIZATION",
            "EMERGENCY",
            "EMERGENCY",
        )
        assert pinned["decided"] == "OPTIMIZATION" and pinned["inputs"] == {}
        assert (decision["actor"], decision["previous"], decision["mode"]) == ("operating-modes", None, "OPTIMIZATION")
        assert decision["inputs"]["risk_status"] == "insufficient_data"
        assert unpin["at"] > pinned["at"] > decision["at"]

        second = (await client.get("/api/ceo/decisions", params={"limit": 1, "offset": 1})).json()
        assert (second["limit"], second["offset"]) == (1, 1)
        assert second["items"] == [pinned]
        assert (await client.get("/api/ceo/decisions", params={"offset": 3})).json()["items"] == []
        assert (await client.get("/api/ceo/decisions", params={"limit": 0})).status_code == 422
        # the status shows the same trail, newest first
        status = (await client.get("/api/ceo/status")).json()
        assert status["decisions"] == items


async def test_a_restart_restores_the_pin_and_the_decided_mode(make_settings: MakeSettings, clock: FakeClock) -> None:
    async with modes_app(make_settings, clock) as (client, _):
        first = (await client.get("/api/ceo/status")).json()
        clock.advance(seconds=30)
        pinned_at = (await pin(client, "EMERGENCY", reason="exchange incident", actor="alice"))["pinned"]["at"]
    clock.advance(seconds=60)

    container = bootstrap(make_settings(modes_enabled=True), clock=clock)
    assert container.modes.limit_layer().new_positions_allowed is False  # not restored yet: nothing opens
    async with running(container) as client:
        status = (await client.get("/api/ceo/status")).json()
        assert status["restored"] is True
        assert status["mode"] == "EMERGENCY"
        assert status["decided"] == "OPTIMIZATION"
        assert status["since"] == first["since"]
        assert status["pinned"]["mode"] == "EMERGENCY"
        assert status["pinned"]["actor"] == "alice"
        assert status["pinned"]["reason"] == "exchange incident"
        assert status["pinned"]["at"] == pinned_at != first["since"]
        denied = await client.post("/trades", json=trade_body())
        assert [r["detail"] for r in reasons(denied)] == ["NEW_POSITIONS_DISABLED: mode=EMERGENCY"]
        evaluated = (await client.post("/api/ceo/evaluate")).json()
        assert evaluated["mode"] == "EMERGENCY" and evaluated["decided"] == "OPTIMIZATION"
        assert evaluated["since"] == first["since"]  # the restored decided mode stays: no new decision
        kinds = [d["kind"] for d in (await client.get("/api/ceo/decisions")).json()["items"]]
        assert kinds == ["pin", "decision"]


async def test_a_restart_keeps_a_decided_preservation_until_the_dwell_time(
    make_settings: MakeSettings, clock: FakeClock
) -> None:
    """A decided (not pinned) stricter mode survives the restart: the rules of the new process would
    choose OPTIMIZATION, but loosening waits for the minimum dwell time counted from before the restart."""
    sensitive = {"mode_expansion_drawdown_pct": 0.0, "mode_preservation_drawdown_pct": 0.01}
    async with modes_app(make_settings, clock, **sensitive) as (client, container):
        opened = await client.post("/trades", json=trade_body(client_order_id="loss"))
        assert opened.status_code == 201, opened.text
        closed = await client.post(f"/trades/{opened.json()['trade']['id']}/close", json={"price": "59000"})
        assert closed.status_code == 200, closed.text
        await container.bus.drain()
        clock.advance(seconds=1)
        body = (await client.post("/api/ceo/evaluate")).json()
        assert body["mode"] == body["decided"] == "PRESERVATION", body["last_evaluation"]
        assert body["pinned"] is None
        assert body["last_evaluation"]["inputs"]["drawdown_pct"] > 0.01
        since = body["since"]
    clock.advance(seconds=60)

    async with modes_app(make_settings, clock) as (client, container):
        status = (await client.get("/api/ceo/status")).json()
        assert (status["mode"], status["decided"], status["since"]) == ("PRESERVATION", "PRESERVATION", since)
        last = status["last_evaluation"]
        assert last["rule_mode"] == "OPTIMIZATION" and last["mode"] == "PRESERVATION"
        assert "held" in last["reason"] and "min dwell" in last["reason"]
        leverage = str(NORMAL.max_leverage)
        denied = await client.post("/trades", json=trade_body(leverage=leverage, client_order_id="after-restart"))
        assert [r["code"] for r in reasons(denied)] == ["MAX_LEVERAGE"]
        assert "mode=PRESERVATION" in reasons(denied)[0]["detail"]

        clock.advance(seconds=900)
        body = (await client.post("/api/ceo/evaluate")).json()
        assert body["mode"] == body["decided"] == "OPTIMIZATION"
        assert body["last_evaluation"]["reason"].startswith("loosens one step to OPTIMIZATION")
        allowed = await client.post("/trades", json=trade_body(leverage=leverage, client_order_id="after-dwell"))
        assert allowed.status_code == 201, allowed.text


async def test_with_modes_disabled_the_layer_is_not_applied(make_settings: MakeSettings, clock: FakeClock) -> None:
    async with modes_app(make_settings, clock, modes_enabled=False) as (client, container):
        status = (await client.get("/api/ceo/status")).json()
        assert status["enabled"] is False
        assert status["last_evaluation"] is None  # no timer decides
        body = await pin(client, "EMERGENCY")
        assert body["enabled"] is False and body["mode"] == "EMERGENCY"
        allowed = await client.post("/trades", json=trade_body())
        assert allowed.status_code == 201, allowed.text
        effective = (await client.get("/api/v2/policy/effective")).json()
        assert "mode" not in [layer["layer"] for layer in effective["layers"]]
        assert effective["limits"]["new_positions_allowed"]["value"] is True
        assert container.modes.evaluations == 0
