"""Every mutating endpoint needs X-API-Key; reads do not."""

import httpx
import pytest

from app.bootstrap import Container
from app.main import create_app
from tests.support import API_KEY

Api = tuple[httpx.AsyncClient, Container]
# Every POST needs the key, POST /api/ai/signal too: it changes nothing but runs the models.
MUTATING = sorted(
    (method.upper(), path)
    for path, operations in create_app().openapi()["paths"].items()
    for method in operations
    if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}
)


def test_the_mutating_routes_are_known() -> None:
    assert MUTATING == [
        ("DELETE", "/api/v2/risk/blocklist/{symbol}"),
        ("PATCH", "/api/v2/policy/risk-profile"),
        ("POST", "/api/ai/signal"),
        ("POST", "/api/ceo/evaluate"),
        ("POST", "/api/ceo/pin"),
        ("POST", "/api/ceo/unpin"),
        ("POST", "/api/clm/retrain"),
        ("POST", "/api/governance/evaluate"),
        ("POST", "/api/governance/should-allow-trade"),
        ("POST", "/api/v2/policy/risk-mode"),
        ("POST", "/api/v2/policy/risk-profile/reset"),
        ("POST", "/api/v2/risk/kill-switch"),
        ("POST", "/api/v2/safety/reset"),
        ("POST", "/positions/{position_id}/close"),
        ("POST", "/trades"),
        ("POST", "/trades/{trade_id}/close"),
        ("PUT", "/api/v2/risk/blocklist/{symbol}"),
    ]


@pytest.mark.parametrize("method,path", MUTATING)
@pytest.mark.parametrize("key", [None, "wrong-key-0123456789", API_KEY[:-1]])
async def test_mutating_endpoint_without_the_key_is_401(api: Api, method: str, path: str, key: str | None) -> None:
    client, _ = api
    url = path.replace("{trade_id}", "00000000-0000-0000-0000-000000000000").replace("{symbol}", "BTCUSDT")
    headers = {"X-API-Key": key} if key else {}
    client.headers.pop("X-API-Key", None)
    response = await client.request(method, url, json={"reason": "try it"}, headers=headers)
    assert response.status_code == 401, (method, path, response.text)
    assert response.json()["error"] == "unauthorized"
    assert (await client.get("/api/v2/policy/history")).json()["total"] == 0
    assert (await client.get("/api/v2/risk/decisions")).json()["total"] == 0


async def test_reads_need_no_key(api: Api) -> None:
    client, _ = api
    client.headers.pop("X-API-Key", None)
    for path in ["/trades", "/api/v2/policy/risk-profile", "/api/v2/safety/status", "/health", "/ready", "/metrics"]:
        assert (await client.get(path)).status_code == 200, path


async def test_app_refuses_to_start_without_an_api_key(make_settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_settings(api_key=""))
    with pytest.raises(RuntimeError, match="API_KEY"):
        async with app.router.lifespan_context(app):
            pass
