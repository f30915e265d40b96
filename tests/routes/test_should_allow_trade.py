"""POST /api/governance/should-allow-trade: RiskGuard's answer and the recommended size, from the
limit stack, without opening or storing anything."""

from decimal import Decimal
from typing import Any

import pytest

from app.bootstrap import bootstrap
from tests.support import running, trade_body

API = tuple[Any, Any]
URL = "/api/governance/should-allow-trade"


async def test_an_allowed_intent_is_answered_and_nothing_is_stored(api: API) -> None:
    client, _ = api
    response = await client.post(URL, json=trade_body())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["allowed"] is True and body["reasons"] == []
    # NORMAL on 10,000 USDT: the 1,000 USDT position cap binds before 1.5 % risk at a 1.67 % stop (9,000).
    assert body["recommended_notional"] == "1000.00"
    assert body["binding"] == {"code": "POSITION_SIZE_CAP", "by": "profile=NORMAL"}
    assert body["limits"]["max_leverage"] == {"value": "5", "layer": "profile", "source": "NORMAL"}
    assert (await client.get("/trades")).json()["total"] == 0
    assert (await client.get("/api/v2/risk/decisions")).json()["total"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the position cap binds
        {"stop_loss": "48000"},  # a 20 % stop: MAX_RISK_PER_TRADE binds (1.5 % of 10,000 / 20 % = 750)
        {"stop_loss": None},  # the assumed stop distance
        {"leverage": "1", "stop_loss": "59900"},
    ],
)
async def test_the_recommended_size_is_allowed_and_one_cent_more_is_denied_for_its_size(
    api: API, overrides: dict[str, Any]
) -> None:
    client, _ = api
    probe = (await client.post(URL, json=trade_body(**overrides))).json()
    if overrides.get("stop_loss") == "48000":
        assert probe["binding"] == {"code": "MAX_RISK_PER_TRADE", "by": "profile=NORMAL"}
    recommended = Decimal(probe["recommended_notional"])
    at = (await client.post(URL, json=trade_body(notional=str(recommended), **overrides))).json()
    assert at["allowed"] is True, at
    above = (await client.post(URL, json=trade_body(notional=str(recommended + Decimal("0.01")), **overrides))).json()
    assert above["allowed"] is False
    assert [r["code"] for r in above["reasons"]] == [probe["binding"]["code"]]
    opened = await client.post("/trades", json=trade_body(notional=str(recommended), **overrides))
    assert opened.status_code == 201, opened.text


async def test_a_denied_intent_names_the_binding_layer(api: API) -> None:
    client, _ = api
    body = (await client.post(URL, json=trade_body(leverage="9", confidence="0.5"))).json()
    assert body["allowed"] is False
    details = {r["code"]: r["detail"] for r in body["reasons"]}
    assert "profile=NORMAL" in details["MAX_LEVERAGE"] and "profile=NORMAL" in details["MIN_CONFIDENCE"]


async def test_governance_binds_the_answer(make_settings: Any) -> None:
    container = bootstrap(make_settings(governance_limits_enabled=True))
    async with running(container) as client:
        body = (await client.post(URL, json=trade_body(confidence="0.66", leverage="2"))).json()
        assert body["allowed"] is True and body["governance_policy"] == "BALANCED"
        for i in range(5):
            opened = await client.post("/trades", json=trade_body(client_order_id=f"cap-{i}"))
            assert opened.status_code == 201, opened.text
        body = (await client.post(URL, json=trade_body())).json()
        assert body["allowed"] is False
        assert body["reasons"][0]["detail"] == "MAX_OPEN_POSITIONS: open=5 max=5 governance=BALANCED"


async def test_it_needs_the_key_and_a_known_symbol(api: API) -> None:
    client, _ = api
    assert (await client.post(URL, json=trade_body(), headers={"X-API-Key": "wrong"})).status_code == 401
    unknown = await client.post(URL, json=trade_body(symbol="NOPEUSDT"))
    assert unknown.status_code == 422 and "unknown symbol" in unknown.json()["detail"]
