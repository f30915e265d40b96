"""GET /api/v2/policy/effective: every limit, its value and the layer that set it."""

from typing import Any

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from tests.support import running, trade_body

API = tuple[Any, Any]


async def test_effective_limits_name_their_layer_and_follow_overrides(api: API) -> None:
    client, _ = api
    body = (await client.get("/api/v2/policy/effective")).json()
    limits = body["limits"]
    assert limits["max_leverage"] == {"value": "5", "layer": "profile", "source": "NORMAL"}
    normal = str(DEFAULT_PROFILES[RiskMode.NORMAL].global_min_confidence)
    assert limits["min_confidence"] == {"value": normal, "layer": "profile", "source": "NORMAL"}
    assert limits["leverage_multiplier"]["value"] == "1"
    assert limits["effective_max_leverage"]["value"] == "5"
    assert limits["new_positions_allowed"]["value"] is True
    assert body["hard"]["max_total_exposure_pct"] == "200"
    assert [layer["layer"] for layer in body["layers"]] == ["hard", "profile", "safety"]
    assert body["inputs"]["profile"] == "NORMAL" and body["inputs"]["equity"] == "10000"

    await client.patch("/api/v2/policy/risk-profile", json={"global_min_confidence": 0.8, "reason": "tighter"})
    await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "cpi"})
    limits = (await client.get("/api/v2/policy/effective")).json()["limits"]
    assert limits["max_leverage"] == {"value": "3", "layer": "profile", "source": "DEFENSIVE"}
    defensive = str(DEFAULT_PROFILES[RiskMode.DEFENSIVE].global_min_confidence)
    assert limits["min_confidence"]["value"] == defensive  # the override (0.8) was NORMAL's


async def test_the_governance_policy_is_a_layer_by_default(make_settings: Any) -> None:
    """With the default settings the portfolio policy binds: BALANCED (below MIN_SAMPLES) allows 5 positions."""
    container = bootstrap(make_settings(governance_limits_enabled=True))
    async with running(container) as client:
        body = (await client.get("/api/v2/policy/effective")).json()
        assert [layer["layer"] for layer in body["layers"]] == ["hard", "profile", "governance", "safety"]
        assert body["limits"]["max_open_positions"] == {"value": 5, "layer": "governance", "source": "BALANCED"}
        assert body["limits"]["max_leverage"]["layer"] == "profile"  # NORMAL's 5x is stricter than 20x
        for i in range(5):
            assert (await client.post("/trades", json=trade_body(client_order_id=f"g{i}"))).status_code == 201
        sixth = await client.post("/trades", json=trade_body(client_order_id="g5"))
        assert sixth.status_code == 403
        assert [r["detail"] for r in sixth.json()["reasons"]] == [
            "MAX_OPEN_POSITIONS: open=5 max=5 governance=BALANCED"
        ]
    assert Settings(_env_file=None).governance_limits_enabled is True  # type: ignore[call-arg]
