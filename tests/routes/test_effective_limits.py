"""GET /api/v2/policy/effective: every limit, its value and the layer that set it."""

from typing import Any

API = tuple[Any, Any]


async def test_effective_limits_name_their_layer_and_follow_overrides(api: API) -> None:
    client, _ = api
    body = (await client.get("/api/v2/policy/effective")).json()
    limits = body["limits"]
    assert limits["max_leverage"] == {"value": "5", "layer": "profile", "source": "NORMAL"}
    assert limits["min_confidence"] == {"value": "0.65", "layer": "profile", "source": "NORMAL"}
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
    assert limits["min_confidence"]["value"] == "0.75"  # the override was NORMAL's
